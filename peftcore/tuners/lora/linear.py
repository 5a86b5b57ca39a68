"""LoRA on `nn.Linear` and on GPT-2 style `Conv1D` (its weight stored (in, out): `fan_in_fan_out`).

    y = W x + b + s · B A dropout(x)

The forward adds the update straight into the base output where that is invisible to anyone else
(one GEMM, `result += s · (A x) Bᵀ`), which keeps a training step as cheap as the base layer allows.
DoRA rescales each output row: y = (m/‖W+sBA‖)·(W x + s·B A x) + b (see `dora.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.layer import LoraLayer


class Linear(nn.Module, LoraLayer):
    """LoRA on `nn.Linear` and GPT-2 style `Conv1D` (weight stored (in, out): `fan_in_fan_out`)."""

    # nn.Module comes first in the bases, so its own repr hooks would win: use LoRA's.
    __repr__ = LoraLayer.__repr__
    extra_repr = LoraLayer.extra_repr

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str = "default",
        config: LoraConfig | None = None,
        r: int = 0,
        lora_alpha: float = 1,
        fan_in_fan_out: bool = False,
        is_target_conv_1d_layer: bool = False,
        **kwargs: Any,
    ) -> None:
        nn.Module.__init__(self)
        LoraLayer.__init__(self, base_layer, **kwargs)
        self.fan_in_fan_out = fan_in_fan_out
        self.is_target_conv_1d_layer = is_target_conv_1d_layer
        self._active_adapter = adapter_name
        if config is not None and r > 0:
            self.update_layer(adapter_name, r, lora_alpha, config, **kwargs)

    def _create_adapter(
        self, adapter_name: str, r: int, lora_bias: bool, tensor_kwargs: dict[str, Any]
    ) -> None:
        self.lora_A[adapter_name] = nn.Linear(self.in_features, r, bias=False, **tensor_kwargs)
        self.lora_B[adapter_name] = nn.Linear(r, self.out_features, bias=lora_bias, **tensor_kwargs)

    def _weight_rows(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.t() if self.fan_in_fan_out else weight

    def _weight_from_rows(self, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return rows.t() if self.fan_in_fan_out else rows

    def _lora_rows(self, adapter_name: str) -> torch.Tensor:
        a, b = _linear(self.lora_A, adapter_name).weight, _linear(self.lora_B, adapter_name).weight
        if a.device.type == "cpu" and a.dtype in (torch.float16, torch.bfloat16):
            return (b.float() @ a.float()).to(a.dtype)
        return b @ a  # (out, in)

    def _lora_output(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        a, b = _linear(self.lora_A, adapter_name), _linear(self.lora_B, adapter_name)
        x = self._cast_input_dtype(x, a.weight.dtype)
        return b(a(self.lora_dropout[adapter_name](x))) * self.scaling[adapter_name]

    def forward(
        self, x: torch.Tensor, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any
    ) -> torch.Tensor:
        # Before the base forward: disabling adapters on a merged layer unmerges them first.
        if self._skip_adapters():
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        # Adding each update into `result` in place saves a copy of the whole output per adapter.
        owned = not (args or kwargs) and self._owns_base_output()
        for name in self.active_adapters:
            if name not in self.r or name in self.merged_adapters:
                continue
            lora_A = _linear(self.lora_A, name)
            lora_B = _linear(self.lora_B, name)
            scaling = self.scaling[name]
            xa = self._cast_input_dtype(x, lora_A.weight.dtype)
            xa = self.lora_dropout[name](xa)
            if name in self.lora_magnitude_vector:
                result = result + self._dora_update(name, xa, result).to(result.dtype)
            elif lora_B.bias is not None:
                result = result + (lora_B(lora_A(xa)) * scaling).to(result.dtype)
            elif result.dtype == lora_B.weight.dtype and not isinstance(scaling, torch.Tensor):
                result = self._add_lora_gemm(
                    result, F.linear(xa, lora_A.weight), lora_B.weight, scaling, owned
                )
            else:
                # The GEMM's output is fresh and not kept for backward: scaling it in place is safe.
                update = F.linear(F.linear(xa, lora_A.weight), lora_B.weight).mul_(scaling).to(result.dtype)
                result = result.add_(update) if owned else result + update
            owned = True  # from here on `result` was created by this forward
        return result

    def _add_lora_gemm(
        self, result: torch.Tensor, h: torch.Tensor, lora_B: torch.Tensor, scaling: float, owned: bool
    ) -> torch.Tensor:
        """`result + s · h Bᵀ` as one GEMM over the rows: no separate scale or add over the output."""
        rows, r = (-1, result.shape[-1]), h.shape[-1]
        if not (owned and result.is_contiguous()):
            flat = torch.addmm(result.reshape(rows), h.reshape(-1, r), lora_B.t(), alpha=scaling)
            return flat.view(result.shape)
        # `_unsafe_view` is a reshape that autograd does not track as a view (as torch.matmul uses it):
        # an in-place update through a tracked view would make backward copy the whole gradient.
        flat = torch.ops.aten._unsafe_view(result, rows)
        flat.addmm_(h.reshape(-1, r), lora_B.t(), alpha=scaling)
        return torch.ops.aten._unsafe_view(flat, result.shape)

    def _owns_base_output(self) -> bool:
        """True when updating the base output in place is invisible to everyone else.

        A plain nn.Linear keeps only its input and weight for backward, never its output; with no hooks
        on it (its own or global ones), nothing else holds a reference to that output.
        """
        base = self.base_layer
        if type(base) is not nn.Linear or not _INPLACE_SUPPORTED:
            return False
        if any(getattr(base, attr, None) for attr in _HOOK_ATTRS):
            return False
        module = nn.modules.module
        return not any(getattr(module, f"_global{attr}") for attr in _HOOK_ATTRS)

    def _dora_update(self, name: str, xa: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """(m/‖W+sBA‖ − 1)·(W x) + (m/‖W+sBA‖)·s·B A x, with W x recomputed when dropout is active."""
        weight = self._base_weight()
        magnitude = self._magnitude(name)
        norm = self._dora_norm(name, weight.detach()).detach()
        scale = (magnitude / norm).view(*([1] * (result.dim() - 1)), -1)
        lora_out = F.linear(
            F.linear(xa, _linear(self.lora_A, name).weight), _linear(self.lora_B, name).weight
        )
        if isinstance(self.lora_dropout[name], nn.Identity) or not self.training:
            base_out = result.to(magnitude.dtype)
            if self.bias is not None:
                base_out = base_out - self.bias.to(magnitude.dtype)
        else:
            base_out = F.linear(xa, self._weight_rows(weight).to(xa.dtype))
        return (scale - 1) * base_out + scale * lora_out * self.scaling[name]


# The hook registries the in-place add must see empty. They are torch internals: if this torch names them
# otherwise (or lacks the non-tracking reshape), the in-place path is off and LoRA adds out of place,
# which is always correct, only a copy slower — the check fails closed, never open.
_HOOK_ATTRS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _inplace_supported() -> bool:
    module = nn.modules.module
    per_module = nn.Linear(1, 1)
    return (
        all(hasattr(module, f"_global{attr}") for attr in _HOOK_ATTRS)
        and all(hasattr(per_module, attr) for attr in _HOOK_ATTRS)
        and hasattr(torch.ops.aten, "_unsafe_view")
    )


_INPLACE_SUPPORTED = _inplace_supported()


def _linear(box: nn.ModuleDict, name: str) -> nn.Linear:
    """`box[name]` as the nn.Linear it holds (ModuleDict entries are typed as plain Module)."""
    return cast(nn.Linear, box[name])
