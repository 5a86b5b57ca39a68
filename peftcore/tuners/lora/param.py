"""LoRA on parameters (`target_parameters`): for weights used without a Linear module, e.g. the stacked
expert weights of MoE layers (`experts.gate_up_proj`, shape (experts, in, out)).

`ParamWrapper` wraps the module that owns the parameter; its forward runs that module with
`P + ΔP` substituted for the parameter for that one call (`substituted`), so the module's own code is
used unchanged. For a 2-d parameter (out, in): ΔP = s · B A. For a 3-d parameter (E, d1, d2): A is
(E·r × d2) and B (d1 × E·r); expert e uses rows e·r…(e+1)·r of A and the matching columns of B, so
ΔP[e] = s · B_e A_e (HF PEFT's layout). Several parameters of one module give nested wrappers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn

from peftcore.config import PeftConfig
from peftcore.injection import get_submodule_parent, inside_any, logical_modules
from peftcore.tuners.base_layer import BaseTunerLayer
from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.layer import LoraLayer


class ParamWrapper(nn.Module, LoraLayer):
    """LoRA on one `nn.Parameter` (`parameter_name`) of the wrapped module."""

    # nn.Module comes first in the bases, so its own repr hooks would win: use LoRA's.
    __repr__ = LoraLayer.__repr__

    infer_features = False  # sizes come from the parameter, not the module type

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str = "default",
        parameter_name: str = "weight",
        config: LoraConfig | None = None,
        r: int = 0,
        lora_alpha: float = 1,
        **kwargs: Any,
    ) -> None:
        self.parameter_name = parameter_name
        nn.Module.__init__(self)
        LoraLayer.__init__(self, base_layer, **kwargs)
        shape = self.get_param().shape
        if len(shape) not in (2, 3):
            raise ValueError(
                f"lora.ParamWrapper adapts 2-d and 3-d parameters; {parameter_name!r} has shape {tuple(shape)}"
            )
        self.num_experts = 1 if len(shape) == 2 else int(shape[0])
        self.in_features, self.out_features = (
            (shape[1], shape[0]) if len(shape) == 2 else (shape[2], shape[1])
        )
        self._active_adapter = adapter_name
        if config is not None and r > 0:
            self.update_layer(adapter_name, r, lora_alpha, config, **kwargs)

    def get_param(self) -> torch.Tensor:
        return cast(torch.Tensor, getattr(self.get_base_layer(), self.parameter_name))

    @property
    def weight(self) -> torch.Tensor:
        return self.get_param()

    def _check_update(self, adapter_name: str, r: int, config: LoraConfig) -> None:
        for flag, value in (
            ("lora_dropout != 0", config.lora_dropout),
            ("fan_in_fan_out", config.fan_in_fan_out),
            ("lora_bias=True", config.lora_bias),
            ("use_dora=True", config.use_dora),
        ):
            if value:
                raise ValueError(
                    f"lora.ParamWrapper does not work with {flag}; adapt this parameter without it"
                )

    def _create_adapter(
        self, adapter_name: str, r: int, lora_bias: bool, tensor_kwargs: dict[str, Any]
    ) -> None:
        rank = r * self.num_experts
        self.lora_A[adapter_name] = nn.Linear(self.in_features, rank, bias=False, **tensor_kwargs)
        self.lora_B[adapter_name] = nn.Linear(rank, self.out_features, bias=False, **tensor_kwargs)

    def _lora_rows(self, adapter_name: str) -> torch.Tensor:
        a = cast(nn.Linear, self.lora_A[adapter_name]).weight
        b = cast(nn.Linear, self.lora_B[adapter_name]).weight
        if self.num_experts == 1:
            return b @ a
        experts = self.num_experts
        a3 = a.reshape(experts, -1, a.shape[-1])  # (E, r, d2)
        b3 = b.reshape(b.shape[0], -1, experts)  # (d1, r, E)
        return torch.einsum("ore,eri->eoi", b3, a3)  # (E, d1, d2)

    def _weight_from_rows(self, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return rows

    def _merged_weight(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        delta = self.get_delta_weight(name)
        return weight.to(delta.dtype) + delta

    def _lora_output(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        raise ValueError(
            "lora.ParamWrapper does not support mixed adapter batches yet: adapter_names was given; call the "
            "model without adapter_names"
        )

    def forward(self, x: Any, *args: Any, adapter_names: Any = None, **kwargs: Any) -> Any:
        if adapter_names is not None:
            self._lora_output("", x)
        if self._skip_adapters():
            return self.base_layer(x, *args, **kwargs)
        param = self.get_param()
        new = param
        for name in self.active_adapters:
            if name in self.r and name not in self.merged_adapters:
                new = new + self.get_delta_weight(name).to(param.dtype)
        if new is param:
            return self.base_layer(x, *args, **kwargs)
        layer = self.get_base_layer()
        with substituted(layer, self.parameter_name, new):
            return self.base_layer(x, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"parameter_name={self.parameter_name!r}, " + LoraLayer.extra_repr(self)


@contextmanager
def substituted(module: nn.Module, name: str, tensor: torch.Tensor) -> Iterator[None]:
    """Make `module.<name>` read as `tensor` inside the block; the original comes back afterwards.

    The tensor goes where attribute lookup finds it first: the instance dict when a wrapper put a
    plain tensor there (FSDP with `use_orig_params` serves its parameter views that way during the
    forward), else the module's parameter table.
    """
    table: dict[str, Any] = module.__dict__ if name in module.__dict__ else module._parameters
    original = table[name]
    table[name] = tensor
    try:
        yield
    finally:
        table[name] = original


def plan(config: LoraConfig, model: nn.Module, existing: dict[str, PeftConfig]) -> list[str]:
    """Full names of the parameters `config.target_parameters` matches (module modules_to_save excluded).

    Raises:
        ValueError: another adapter already targets a different set of parameters, or a targeted
            parameter belongs to a module that is itself an adapter layer.
    """
    wanted = config.target_parameters or []
    if not wanted:
        return []
    others = {tuple(sorted(getattr(c, "target_parameters", None) or [])) for c in existing.values()}
    others.discard(())
    if others and others != {tuple(sorted(wanted))}:
        raise ValueError(
            "all adapters must target the same set of parameters with target_parameters: the nesting of the "
            f"parameter wrappers encodes which parameter an adapter adapts. Existing: {sorted(others)}, new: {wanted}"
        )
    found = []
    saved = config.modules_to_save or []
    for module_name, module in logical_modules(model):
        inner = module
        while isinstance(inner, ParamWrapper):
            inner = inner.base_layer
        for param_name, _ in inner.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if not any(full == t or full.endswith("." + t) for t in wanted) or inside_any(module_name, saved):
                continue
            if isinstance(module, BaseTunerLayer) and not isinstance(module, ParamWrapper):
                raise ValueError(
                    f"Trying to wrap an `nn.Parameter` of layer '{module_name}' of type {type(module).__name__}, "
                    "which is not a valid target. Make sure that this layer is not also targeted with "
                    "`target_modules`."
                )
            found.append(full)
    return found


def inject(config: LoraConfig, adapter_name: str, model: nn.Module, names: list[str], **kwargs: Any) -> None:
    """Wrap each targeted parameter's module (or add the adapter to the wrapper already there)."""
    for full in names:
        module_name, _, param_name = full.rpartition(".")
        r, alpha = config.rank_and_alpha(full)
        module = model.get_submodule(module_name) if module_name else model
        wrapper = _find_wrapper(module, param_name)
        if wrapper is not None:
            wrapper.update_layer(adapter_name, r, alpha, config, **kwargs)
            continue
        new = ParamWrapper(module, adapter_name, param_name, config=config, r=r, lora_alpha=alpha, **kwargs)
        if module_name:
            parent, child = get_submodule_parent(model, module_name)
            setattr(parent, child, new)
        else:
            raise ValueError(
                f"target_parameters entry {full!r} belongs to the model itself; target a submodule's parameter"
            )


def _find_wrapper(module: nn.Module, param_name: str) -> ParamWrapper | None:
    layer: nn.Module = module
    while isinstance(layer, ParamWrapper):
        if layer.parameter_name == param_name:
            return layer
        layer = layer.base_layer
    return None
