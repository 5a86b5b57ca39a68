"""The boundary between in-memory adapter tensors and the HF PEFT key format. No method is named here.

In memory every adapter tensor sits under its adapter name; on disk the name never appears. Each
adapter layer (`adapter_tensor_keys`) and each auxiliary wrapper (`adapter_state_keys`) gives the
mapping of its own tensors, so one function builds the map for any method, and saving and loading
both use it:

| in memory                                         | on disk                         |
|---------------------------------------------------|---------------------------------|
| `<path>.<container>.<name>.weight` (ModuleDict)   | `<path>.<container>.weight`     |
| `<path>.<container>.<name>` (ParameterDict)       | `<path>.<container>`            |
| `<path>.<container>.<name>.weight` (a vector the  | `<path>.<container>`            |
| layer stores as a module, e.g. a magnitude)       |                                 |
| `<path>.modules_to_save.<name>.<param>`           | `<path>.<param>`                |
| `<path>.token_adapter.trainable_tokens_delta.<n>` | `<path>.token_adapter....delta` |
| `<path>.base_layer.bias` (bias="<prefix>only")    | unchanged                       |

Keys of FSDP-wrapped (`_fsdp_wrapped_module.`) and compiled (`_orig_mod.`) models are written
without those prefixes, so the state dict loads into the plain model.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.constants import SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME
from peftcore.errors import AdapterSizeMismatchError
from peftcore.io import download_kwargs, load_safetensors, resolve_file
from peftcore.tuners.base_layer import BaseTunerLayer

# The one tensor a prompt-learning adapter stores: its encoder's output for every virtual token.
PROMPT_EMBEDDINGS_KEY = "prompt_embeddings"
# Names of the input / output embedding layers HF PEFT looks for in target_modules.
EMBEDDING_LAYER_NAMES = ("embed_tokens", "lm_head")
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_orig_mod.", "_checkpoint_wrapped_module.")


def _clean(key: str) -> str:
    """`key` without FSDP / torch.compile / checkpoint-wrapper path segments."""
    for part in _WRAPPER_PREFIXES:
        key = key.replace(part, "")
    return key


def _prefix_of(config: Any) -> str:
    from peftcore.mapping import method_for

    return method_for(config).prefix


def adapter_key_map(
    model: nn.Module, adapter_name: str, bias: str = "none", prefix: str = ""
) -> dict[str, str]:
    """Map on-disk key → in-memory (`named_parameters`) key for one adapter of a wrapped model.

    `model` is the PeftModel (keys start with `base_model.model.`) or any module containing the
    adapter layers; keys are relative to it.
    """
    mapping: dict[str, str] = {}
    for path, module in model.named_modules():
        dot = f"{path}." if path else ""
        if (
            isinstance(module, BaseTunerLayer)
            and module.saves_adapter_tensors
            and adapter_name in module._all_available_adapter_names()
        ):
            for disk, memory in module.adapter_tensor_keys(adapter_name).items():
                mapping[_clean(f"{dot}{disk}")] = f"{dot}{memory}"
            if bias == f"{prefix}only" and module.bias is not None:
                inner = _path_to_bias(module)
                mapping[_clean(f"{dot}{inner}")] = f"{dot}{inner}"
        elif isinstance(module, AuxiliaryTrainingWrapper) and adapter_name in module.adapter_names_held():
            for disk, memory in module.adapter_state_keys(adapter_name).items():
                mapping[_clean(f"{dot}{disk}")] = f"{dot}{memory}"
    if bias == "all":
        inside = {
            id(p) for m in model.modules() if isinstance(m, AuxiliaryTrainingWrapper) for p in m.parameters()
        }
        for pname, param in model.named_parameters():
            if pname.endswith("bias") and id(param) not in inside:
                mapping.setdefault(_clean(pname), pname)
    return mapping


def _path_to_bias(layer: BaseTunerLayer) -> str:
    path, inner = ["base_layer"], layer.base_layer
    while isinstance(inner, BaseTunerLayer):
        path.append("base_layer")
        inner = inner.base_layer
    return ".".join([*path, "bias"])


def get_peft_model_state_dict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor] | None = None,
    adapter_name: str = "default",
    unwrap_compiled: bool = False,
    save_embedding_layers: bool | Literal["auto"] = "auto",
) -> dict[str, torch.Tensor]:
    """The tensors of one adapter under their on-disk keys.

    Args:
        model: a PeftModel, a model with adapters injected (`inject_adapter_in_model`), or either of
            them wrapped by FSDP / torch.compile.
        state_dict: take the tensors from this (in-memory keys) instead of the model's parameters.
        adapter_name: the adapter to extract.
        unwrap_compiled: accepted for HF PEFT compatibility; compiled models are always unwrapped.
        save_embedding_layers: also save the full input/output embedding weights (True), never
            (False), or when `target_modules` names them ("auto").
    """
    config: Any = model.peft_config[adapter_name]  # type: ignore[index]
    mapping = adapter_key_map(model, adapter_name, getattr(config, "bias", "none"), _prefix_of(config))
    if state_dict is None:
        params: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
        params.update(model.named_buffers(remove_duplicate=False))  # a saved module's running statistics
        out = {disk: params[mem] for disk, mem in mapping.items()}
    else:
        out = {disk: state_dict[mem] for disk, mem in mapping.items() if mem in state_dict}
    from peftcore.tuners.base import BaseTuner

    tuner = getattr(model, "base_model", None)
    if isinstance(tuner, BaseTuner):
        out = tuner.adapter_tensors_to_save(adapter_name, out)
    if config.is_prompt_learning:
        # The encoder's output for every virtual token, under the one key HF PEFT uses.
        encoder: Any = model.prompt_encoder[adapter_name]  # type: ignore[index]
        out[PROMPT_EMBEDDINGS_KEY] = encoder.prompt_embeddings()
        return out
    targeted = _embedding_targeted(model, config)
    if _wants_embeddings(config, save_embedding_layers, targeted):
        out.update(_embedding_weights(model, targeted))
    return out


def _embedding_targeted(model: nn.Module, config: Any) -> bool:
    """Does `target_modules` name an `embed_tokens` / `lm_head` (HF PEFT's rule, names or regex)?"""
    targets = getattr(config, "target_modules", None)
    if not targets:
        return False
    if isinstance(targets, str):
        get_base = getattr(model, "get_base_model", None)
        inner = get_base() if callable(get_base) else model
        return any(
            re.fullmatch(targets, name) is not None
            for name, _ in inner.named_modules()
            if any(re.match(rf"(.*\.)?{e}$", name) for e in EMBEDDING_LAYER_NAMES)
        )
    return any(name in targets for name in EMBEDDING_LAYER_NAMES)


def _wants_embeddings(config: Any, save_embedding_layers: bool | str, targeted: bool) -> bool:
    if save_embedding_layers != "auto":
        return bool(save_embedding_layers)
    if targeted and not getattr(config, "trainable_token_indices", None):
        warnings.warn(
            "Setting `save_embedding_layers` to `True` as embedding layers found in `target_modules`.",
            stacklevel=3,
        )
        return True
    return False


def _embedding_weights(model: nn.Module, targeted: bool) -> dict[str, torch.Tensor]:
    """The full input / output embedding weights: of the adapted ones (their base layer) when an embedding
    is targeted, otherwise of the embedding modules themselves."""
    inner = _unwrap_to_transformers(model)
    if inner is None:
        warnings.warn(
            "Could not identify embedding layer(s) because the model is not a 🤗 transformers model.",
            stacklevel=3,
        )
        return {}
    out: dict[str, torch.Tensor] = {}
    getters: Any = inner
    for layer in (getters.get_input_embeddings(), getters.get_output_embeddings()):
        if layer is None or (targeted and not isinstance(layer, BaseTunerLayer)):
            continue
        source = layer.base_layer if targeted and isinstance(layer, BaseTunerLayer) else layer
        for path, module in model.named_modules():
            if module is source:
                dot = f"{path}." if path else ""
                for pname, param in source.named_parameters():
                    out.setdefault(_clean(f"{dot}{pname}"), param)
                break
    return out


def _unwrap_to_transformers(model: nn.Module) -> nn.Module | None:
    """The outermost module whose class has `get_input_embeddings` (the transformers model), or None."""
    for module in model.modules():
        if callable(getattr(type(module), "get_input_embeddings", None)):
            return module
    return None


def set_peft_model_state_dict(
    model: nn.Module,
    peft_model_state_dict: dict[str, torch.Tensor],
    adapter_name: str = "default",
    ignore_mismatched_sizes: bool = False,
    low_cpu_mem_usage: bool = False,
    key_mapping: dict[str, str] | None = None,
) -> _IncompatibleKeys:
    """Copy on-disk-keyed tensors into the adapter; returns (missing adapter keys, unexpected keys).

    Keys that are not adapter keys but name a tensor of the model exactly (e.g. a saved embedding
    weight, a bias trained with `bias="all"`) are loaded too, as HF PEFT does.

    Raises:
        AdapterSizeMismatchError: a tensor's shape does not fit the model (a ValueError and a
            RuntimeError; names the key and both shapes), unless `ignore_mismatched_sizes`.
    """
    config: Any = model.peft_config[adapter_name]  # type: ignore[index]
    state = _apply_key_mapping(peft_model_state_dict, key_mapping or {})
    prompt_missing: list[str] = []
    if config.is_prompt_learning:
        state = dict(state)
        prompt = state.pop(PROMPT_EMBEDDINGS_KEY, None)
        if prompt is None:
            prompt_missing = [PROMPT_EMBEDDINGS_KEY]
        else:
            encoder: Any = model.prompt_encoder[adapter_name]  # type: ignore[index]
            encoder.load_prompt_embeddings(prompt)
    mapping = adapter_key_map(model, adapter_name, getattr(config, "bias", "none"), _prefix_of(config))
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(dict(model.named_buffers(remove_duplicate=False)))
    cleaned = {_clean(k): k for k in tensors}
    redundant = _redundant_wrapper_keys(model, set(state))
    targets: dict[str, str] = {}
    unexpected = []
    for disk in state:
        if disk in mapping:
            targets[disk] = mapping[disk]
        elif disk in cleaned and disk not in redundant:
            targets[disk] = cleaned[disk]
        elif disk not in redundant:
            unexpected.append(disk)
    mismatched = []
    for disk, mem in targets.items():
        expected, got = tuple(tensors[mem].shape), tuple(state[disk].shape)
        if expected != got:
            if not ignore_mismatched_sizes:
                raise AdapterSizeMismatchError(
                    f"size mismatch for {disk}: adapter tensor {disk!r} has shape {got} but the model expects "
                    f"{expected}; the adapter was trained for a different base model or config (check "
                    "base_model_name_or_path, r / rank_pattern and num_labels), or pass ignore_mismatched_sizes=True"
                )
            mismatched.append(f"{disk}: {got} vs {expected}")
    if mismatched:
        warnings.warn(
            f"Some weights were not loaded because their shapes differ and ignore_mismatched_sizes=True was "
            f"passed: {mismatched}",
            stacklevel=2,
        )
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else "")
        warnings.warn(
            f"{len(unexpected)} adapter tensors match no module of the model and were ignored: {shown}",
            stacklevel=2,
        )
    with torch.no_grad():
        for disk, mem in targets.items():
            target, value = tensors[mem], state[disk]
            if tuple(target.shape) != tuple(value.shape):
                continue
            if target.device.type == "meta":
                # `.data` cannot move a tensor off meta: the Parameter itself is replaced in its parent.
                _replace_tensor(model, mem, value.to(dtype=target.dtype), target)
            else:
                target.copy_(value.to(device=target.device, dtype=target.dtype))
    missing = sorted(mem for disk, mem in mapping.items() if disk not in state) + prompt_missing
    return _IncompatibleKeys(missing, unexpected)


def _apply_key_mapping(
    state: dict[str, torch.Tensor], key_mapping: dict[str, str]
) -> dict[str, torch.Tensor]:
    """Rename keys of an older model layout (transformers' `_checkpoint_conversion_mapping`)."""
    if not key_mapping:
        return state
    out = {}
    for key, value in state.items():
        head = "base_model.model." if key.startswith("base_model.model.") else ""
        rest = key[len(head) :]
        for pattern, replacement in key_mapping.items():
            rest, n = re.subn(pattern, replacement, rest)
            if n:
                break
        out[head + rest] = value
    return out


def _redundant_wrapper_keys(model: nn.Module, disk_keys: set[str]) -> set[str]:
    """Keys HF PEFT writes inside auxiliary wrappers (with bias="all"): duplicates, dropped silently."""
    drop: set[str] = set()
    for path, module in model.named_modules():
        if isinstance(module, AuxiliaryTrainingWrapper):
            inner = tuple(_clean(f"{path}.{child}.") for child, _ in module.named_children())
            drop.update(k for k in disk_keys if k.startswith(inner))
    return drop


def _replace_tensor(model: nn.Module, key: str, data: torch.Tensor, old: torch.Tensor) -> None:
    parent_name, _, leaf = key.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(old, nn.Parameter):
        new: Any = nn.Parameter(data, requires_grad=old.requires_grad)
        if isinstance(parent, nn.ParameterDict):
            parent[leaf] = new
        else:
            setattr(parent, leaf, new)
    else:
        parent.register_buffer(leaf, data)


def load_peft_weights(
    model_id: str | os.PathLike[str],
    device: str | torch.device | None = None,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    **hf_hub_download_kwargs: Any,
) -> dict[str, torch.Tensor]:
    """Read adapter weights from a directory or Hub repo, preferring safetensors.

    A legacy `adapter_model.bin` is read with `torch.load(weights_only=True)` only.
    """
    device = device or "cpu"
    use_safetensors = hf_hub_download_kwargs.pop("use_safetensors", None)
    download = download_kwargs(hf_hub_download_kwargs)
    if hf_hub_download_kwargs:
        raise TypeError(
            f"load_peft_weights() got unexpected keyword arguments {sorted(hf_hub_download_kwargs)}; it takes "
            "device, subfolder, revision, token, use_safetensors and the arguments of huggingface_hub.hf_hub_download"
        )
    if use_safetensors is not False:
        path = resolve_file(
            model_id, SAFETENSORS_WEIGHTS_NAME, subfolder, revision, token, required=False, **download
        )
        if path:
            return load_safetensors(path, device)
    path = resolve_file(model_id, WEIGHTS_NAME, subfolder, revision, token, required=False, **download)
    if not path:
        raise FileNotFoundError(
            f"no {SAFETENSORS_WEIGHTS_NAME} (or legacy {WEIGHTS_NAME}) found in {os.fspath(model_id)!r}"
            + (f" subfolder {subfolder!r}" if subfolder else "")
        )
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} could not be read as a weights-only checkpoint: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a dict of tensors")
    return loaded
