"""AdaLoRA layers: LoRA in SVD form, `ΔW = B diag(E) A`, whose rank the schedule prunes.

    y = base(x) + (scaling / (ranknum + 1e-5)) · B (E ⊙ A) dropout(x)

A: (r, in[·k·k]), E: (r, 1) the "singular values", B: (out, r); scaling = lora_alpha (or r when
lora_alpha is 0), ranknum = the initial rank (kept when the rank is later cut, so a pruned adapter
computes the same). Init (HF PEFT's): E = 0 (ΔW = 0), A and B ~ N(0, 0.02); `init_lora_weights=False`
leaves all three N(0, 1). The rank allocator (`allocator.py`) zeroes entries of E; a saved adapter
keeps only the surviving triplets. On disk: `<path>.lora_A`, `lora_E`, `lora_B` (no `.weight`).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from peftcore.tuners.base_layer import BaseTunerLayer, adapter_dtype_for, features_of

_EPS = 1e-5


class AdaLoraLayer(BaseTunerLayer):
    """Per-adapter SVD triplets of one Linear / GPT-2 Conv1D / Conv2d."""

    adapter_layer_names: tuple[str, ...] = ("lora_A", "lora_B", "lora_E")
    other_param_names: tuple[str, ...] = ("r", "lora_alpha", "scaling", "lora_dropout", "ranknum")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        BaseTunerLayer.__init__(self, base_layer)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_E = nn.ParameterDict()
        self.ranknum = nn.ParameterDict()
        self.lora_dropout = nn.ModuleDict()
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        in_features, out_features = features_of(self.get_base_layer())
        self.in_features = int(in_features or 0)
        self.out_features = int(out_features or 0)
        self.fan_in_fan_out = False

    def _a_width(self) -> int:
        base = self.get_base_layer()
        if isinstance(base, nn.Conv2d):
            return self.in_features * base.kernel_size[0] * base.kernel_size[1]
        return self.in_features

    def update_layer(
        self,
        adapter_name: str,
        config: Any,
        r: int,
        lora_alpha: float,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        **kwargs: Any,
    ) -> None:
        """(Re)create `adapter_name` at rank `r` (0 is allowed: a fully pruned layer)."""
        if r < 0:
            raise ValueError(f"`r` should be a positive integer or 0, but the value passed is {r}")
        weight = cast(torch.Tensor, cast(Any, self.get_base_layer()).weight)
        dtype = adapter_dtype_for(weight, autocast_adapter_dtype)
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha if lora_alpha > 0 else float(r)
        self.lora_dropout[adapter_name] = (
            nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        )
        a = torch.randn(r, self._a_width())
        e = torch.randn(r, 1)
        b = torch.randn(self.out_features, r)
        if config.init_lora_weights:
            e.zero_()
            nn.init.normal_(a, mean=0.0, std=0.02)
            nn.init.normal_(b, mean=0.0, std=0.02)
        device = torch.device("meta") if low_cpu_mem_usage else weight.device  # filled by the loader
        for box, tensor in ((self.lora_A, a), (self.lora_E, e), (self.lora_B, b)):
            box[adapter_name] = nn.Parameter(tensor.to(device=device, dtype=dtype))
        rank = torch.full((1,), float(r), device=weight.device, dtype=dtype)
        self.ranknum[adapter_name] = nn.Parameter(rank, requires_grad=False)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def keep_triplets(self, adapter_name: str, keep: torch.Tensor, config: Any) -> None:
        """Cut `adapter_name` to the triplets where `keep` (bool, (init_r,)) is True, same output."""
        keep = keep.to(self.lora_E[adapter_name].device)
        a, e = self.lora_A[adapter_name][keep].detach(), self.lora_E[adapter_name][keep].detach()
        b, ranknum = self.lora_B[adapter_name][:, keep].detach(), self.ranknum[adapter_name].detach().clone()
        self.update_layer(adapter_name, config, int(keep.sum()), self.lora_alpha[adapter_name])
        with torch.no_grad():
            self.lora_A[adapter_name].copy_(a)
            self.lora_E[adapter_name].copy_(e)
            self.lora_B[adapter_name].copy_(b)
            self.ranknum[adapter_name].copy_(ranknum)

    def delta_weight(self, adapter_name: str) -> torch.Tensor:
        """ΔW in the base weight's layout (transposed for Conv1D, reshaped for Conv2d)."""
        a, e, b = self.lora_A[adapter_name], self.lora_E[adapter_name], self.lora_B[adapter_name]
        delta = b @ (a * e) * self.scaling[adapter_name] / (self.ranknum[adapter_name] + _EPS)
        weight = cast(torch.Tensor, cast(Any, self.get_base_layer()).weight)
        if self.fan_in_fan_out:
            delta = delta.t()
        return delta.reshape(weight.shape)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        return self.delta_weight(adapter_name)

    def _merged_params(
        self, adapter_name: str, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return weight + self.delta_weight(adapter_name).detach().to(weight.dtype), None

    def _unmerged_params(
        self, adapter_name: str, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return weight - self.delta_weight(adapter_name).detach().to(weight.dtype), None

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._skip_adapters() or self.merged:
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        base: Any = self.get_base_layer()
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            a, e, b = self.lora_A[name], self.lora_E[name], self.lora_B[name]
            scale = self.scaling[name] / (self.ranknum[name] + _EPS)
            h = self.lora_dropout[name](self._cast_input_dtype(x, a.dtype))
            if isinstance(base, nn.Conv2d):
                delta = (b @ (a * e) * scale).reshape(base.weight.shape)
                update = F.conv2d(
                    h,
                    delta,
                    stride=base.stride,
                    padding=base.padding,
                    dilation=base.dilation,
                    groups=base.groups,
                )
            else:
                update = (h @ (a * e).t() @ b.t()) * scale
            result = result + update.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "adalora." + nn.Module.__repr__(cast(nn.Module, self))


class SVDLinear(nn.Module, AdaLoraLayer):
    """AdaLoRA on `nn.Linear` or GPT-2's `Conv1D` (`fan_in_fan_out`)."""

    forward = AdaLoraLayer.forward
    __repr__ = AdaLoraLayer.__repr__

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str = "default",
        config: Any = None,
        r: int = 0,
        lora_alpha: float = 1,
        fan_in_fan_out: bool = False,
        **kwargs: Any,
    ) -> None:
        nn.Module.__init__(self)
        AdaLoraLayer.__init__(self, base_layer)
        self.fan_in_fan_out = fan_in_fan_out
        self._active_adapter = adapter_name
        if config is not None:
            self.update_layer(adapter_name, config, r, lora_alpha, **kwargs)


class SVDConv2d(SVDLinear):
    """AdaLoRA on `nn.Conv2d`: A is (r, in·k·k); ΔW is reshaped to the kernel."""
