"""Hot-swapping LoRA weights in place: replace an adapter's tensors with another saved adapter's, without
re-creating layers (so a compiled model keeps its compiled graph).

`hotswap_adapter(model, path, adapter_name)` copies the new tensors into the existing ones and updates
each layer's scaling; tensors the new adapter lacks are zeroed (that layer then adds nothing).
For a compiled model whose adapters differ in rank or alpha, call
`prepare_model_for_compiled_hotswap(model, target_rank=...)` once before compiling: it pads every
LoRA A/B to one rank with zeros (the output is unchanged) and turns the scalings into tensors, so a
swap changes values only, never shapes or Python constants.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from peftcore.config import PeftConfig
from peftcore.serialization import _prefix_of, adapter_key_map, load_peft_weights
from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.layer import LoraLayer

_MUST_MATCH = ("use_rslora", "lora_dropout", "alpha_pattern", "use_dora")
_RANK_DIM = {"lora_A": 0, "lora_embedding_A": 0, "lora_B": 1, "lora_embedding_B": 1}


def _lora_layers(model: nn.Module) -> list[tuple[str, LoraLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def _logical_name(name: str) -> str:
    """A layer's module name as the config sees it (no PeftModel / compile / FSDP wrapper segments)."""
    for part in ("_orig_mod.", "base_model.model.", "_fsdp_wrapped_module."):
        name = name.replace(part, "")
    return name


def check_hotswap_configs_compatible(config0: PeftConfig, config1: PeftConfig) -> None:
    """Raise if adapter `config1` cannot replace `config0` by swapping tensors."""
    if config0.peft_type != config1.peft_type:
        raise ValueError(
            f"Incompatible PEFT types found: {_value(config0.peft_type)} and {_value(config1.peft_type)}; "
            "hot-swapping needs two adapters of the same method"
        )
    if _value(config0.peft_type) != "LORA":
        raise ValueError(f"Hotswapping only supports LORA but {_value(config0.peft_type)} was passed")
    for key in _MUST_MATCH:
        if getattr(config0, key) != getattr(config1, key):
            raise ValueError(
                f"Configs are incompatible: for {key}, {getattr(config0, key)!r} != {getattr(config1, key)!r}; "
                "load the second adapter with load_adapter instead of hot-swapping it"
            )


def _value(peft_type: Any) -> str:
    return str(getattr(peft_type, "value", peft_type))


def hotswap_adapter(
    model: nn.Module,
    model_name_or_path: str | Any,
    adapter_name: str,
    torch_device: str | None = None,
    **kwargs: Any,
) -> None:
    """Replace the tensors of `adapter_name` with those of the adapter saved at `model_name_or_path`.

    Raises:
        ValueError: the two adapters are of different methods or incompatible settings.
        RuntimeError: the new adapter adapts modules the current one does not.
    """
    hub = {k: kwargs.get(k) for k in ("subfolder", "revision", "token")}
    config = PeftConfig.from_pretrained(model_name_or_path, **hub)
    check_hotswap_configs_compatible(cast(Any, model).peft_config[adapter_name], config)
    weights = load_peft_weights(model_name_or_path, device=torch_device, **hub)
    hotswap_adapter_from_state_dict(model, weights, adapter_name, cast(LoraConfig, config))


def hotswap_adapter_from_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    adapter_name: str,
    config: LoraConfig,
    parameter_prefix: str = "lora_",
) -> None:
    """Copy `state_dict` (on-disk keys) into the tensors of `adapter_name` and rescale its layers."""
    current = cast(Any, model).peft_config[adapter_name]
    mapping = adapter_key_map(model, adapter_name, getattr(current, "bias", "none"), _prefix_of(current))
    unexpected = [key for key in state_dict if key not in mapping]
    if unexpected:
        shown = ", ".join(_with_adapter_name(key, adapter_name) for key in unexpected)
        raise RuntimeError(
            f"Hot swapping the adapter did not succeed, unexpected keys found: {shown}. The new adapter adapts "
            "modules the current one does not; load it with load_adapter instead"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for disk, memory in mapping.items():
            target = params[memory]
            if disk not in state_dict:
                target.zero_()  # the new adapter leaves this module alone
                continue
            _copy_into(model, memory, target, state_dict[disk].to(device=target.device, dtype=target.dtype))
        for name, layer in _lora_layers(model):
            if adapter_name in layer.r:
                r, alpha = config.rank_and_alpha(_logical_name(name))
                scaling = alpha / math.sqrt(r) if config.use_rslora else alpha / r
                old = layer.scaling[adapter_name]
                if isinstance(old, torch.Tensor):
                    old.fill_(scaling)
                else:
                    layer.scaling[adapter_name] = scaling


def _with_adapter_name(key: str, adapter_name: str) -> str:
    """The in-memory form of an on-disk key (`...lora_A.weight` → `...lora_A.<name>.weight`)."""
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part.startswith("lora_"):
            return ".".join([*parts[: i + 1], adapter_name, *parts[i + 1 :]])
    return key


def _copy_into(model: nn.Module, memory_key: str, target: torch.Tensor, new: torch.Tensor) -> None:
    if new.shape == target.shape:
        target.copy_(new)
        return
    container = next((c for c in _RANK_DIM if f".{c}." in f".{memory_key}"), None)
    dim = _RANK_DIM.get(container or "")
    if (
        dim is None
        or new.dim() != target.dim()
        or any(a != b for i, (a, b) in enumerate(zip(new.shape, target.shape, strict=True)) if i != dim)
    ):
        raise RuntimeError(
            f"Hot swapping {memory_key!r}: shape {tuple(new.shape)} does not fit {tuple(target.shape)}"
        )
    if new.shape[dim] <= target.shape[dim]:  # a model padded by prepare_model_for_compiled_hotswap
        target.zero_()
        _copy_padded(model, memory_key, target, new, dim)
    else:  # a larger rank on an unpadded (uncompiled) model: the tensor grows
        target.data = new.clone()


def _copy_padded(
    model: nn.Module, memory_key: str, target: torch.Tensor, new: torch.Tensor, dim: int
) -> None:
    """Copy `new` into the leading part of `target` along `dim`; group by group for grouped conv A."""
    layer_path = memory_key.split(".lora_")[0]
    layer = model.get_submodule(layer_path)
    groups = getattr(layer.get_base_layer(), "groups", 1) if isinstance(layer, LoraLayer) else 1
    if groups > 1 and dim == 0:
        old_per, new_per = new.shape[0] // groups, target.shape[0] // groups
        for g in range(groups):
            target[g * new_per : g * new_per + old_per] = new[g * old_per : (g + 1) * old_per]
        return
    target.narrow(dim, 0, new.shape[dim]).copy_(new)


def prepare_model_for_compiled_hotswap(
    model: nn.Module,
    *,
    target_rank: int | None = None,
    config: LoraConfig | Mapping[str, LoraConfig] | None = None,
    check_compiled: str = "error",
) -> None:
    """Make later hot-swaps shape- and constant-stable: scalings become tensors, ranks are padded.

    Args:
        model: the PeftModel, after loading the first adapter and before compiling.
        target_rank: pad every adapter's rank to this (the largest rank of the adapters to come).
        config: the config(s) to update to `target_rank` (e.g. `model.peft_config`).
        check_compiled: "error", "warn" or "ignore" when `model` is already compiled.

    Raises:
        ValueError: a wrong `check_compiled`, a compiled model (with "error"), a model without LoRA
            layers, a `target_rank` below an existing rank or not divisible by a conv's groups.
    """
    if check_compiled not in ("error", "warn", "ignore"):
        raise ValueError(
            f"check_compiles should be one of 'error', 'warn', or 'ignore', got '{check_compiled}' instead."
        )
    if hasattr(model, "_orig_mod") and check_compiled != "ignore":
        if check_compiled == "error":
            raise ValueError("Call prepare_model_for_compiled_hotswap *before* compiling the model")
        warnings.warn(
            "prepare_model_for_compiled_hotswap was called with a model that is already compiled. This will likely "
            "result in re-compilation, hurting performance. Call the function before compiling the model.",
            stacklevel=2,
        )
    layers = _lora_layers(model)
    if not layers:
        raise ValueError(
            "No adapter layers found on the model, make sure call `prepare_model_for_compiled_hotswap` after loading "
            "the first adapter and before loading the second adapter."
        )
    for _, layer in layers:
        for name, value in list(layer.scaling.items()):
            if not isinstance(value, torch.Tensor):
                layer.scaling[name] = torch.tensor(value, device=layer.weight.device)
    if target_rank is not None:
        for _, layer in layers:
            _pad_layer(layer, target_rank)
        configs = [config] if isinstance(config, LoraConfig) else list((config or {}).values())
        for conf in configs:
            conf.r = target_rank
            conf.rank_pattern = {key: target_rank for key in conf.rank_pattern}


def _pad_layer(layer: LoraLayer, target_rank: int) -> None:
    groups = getattr(layer.get_base_layer(), "groups", 1)
    for name in list(layer.lora_A.keys()):
        rank = cast(Any, layer.lora_A[name]).weight.shape[0]
        if target_rank < rank:
            raise ValueError(
                f"Trying to pad the adapter to the target rank {target_rank}, but the original rank is larger "
                f"({rank}). Choose a target_rank of at least the largest rank of your adapters."
            )
        if target_rank % groups != 0:
            raise ValueError(
                f"Trying to pad a {type(layer.get_base_layer()).__name__} LoRA adapter with groups={groups} to target "
                f"rank {target_rank}, but the target rank is not divisible by {groups}. Please choose a target rank "
                f"that is divisible by {groups}."
            )
        if target_rank == rank:
            continue
        layer.lora_A[name] = _padded(cast(Any, layer.lora_A[name]), target_rank, 0, groups)
        layer.lora_B[name] = _padded(cast(Any, layer.lora_B[name]), target_rank, 1, groups)


def _padded(module: nn.Module, target_rank: int, dim: int, groups: int) -> nn.Module:
    """A copy of a LoRA A (dim 0) or B (dim 1) module with rank `target_rank`, the extra part zero."""
    weight = cast(torch.Tensor, cast(Any, module).weight)
    shape = list(weight.shape)
    shape[dim] = target_rank if dim == 0 else target_rank // groups
    padded = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        if dim == 0 and groups > 1:
            old_per, new_per = weight.shape[0] // groups, target_rank // groups
            for g in range(groups):
                padded[g * new_per : g * new_per + old_per] = weight[g * old_per : (g + 1) * old_per]
        else:
            padded.narrow(dim, 0, weight.shape[dim]).copy_(weight)
    new = _resized(module, target_rank, dim)
    new.weight = nn.Parameter(padded, requires_grad=weight.requires_grad)
    bias = getattr(module, "bias", None)
    if bias is not None:
        new.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
    return new


def _resized(module: nn.Module, target_rank: int, dim: int) -> nn.Module:
    """The same layer with its rank-side size set to `target_rank` (weights replaced by the caller)."""
    if isinstance(module, nn.Linear):
        sizes = (module.in_features, target_rank) if dim == 0 else (target_rank, module.out_features)
        return nn.Linear(*sizes, bias=module.bias is not None, device="meta")
    conv = cast(nn.Conv2d, module)
    channels = (conv.in_channels, target_rank) if dim == 0 else (target_rank, conv.out_channels)
    return type(conv)(
        *channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device="meta",
    )
