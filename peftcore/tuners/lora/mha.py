"""LoRA on `nn.MultiheadAttention`: on its packed q/k/v projection and on its output projection.

`nn.MultiheadAttention.forward` reads `in_proj_weight` and `out_proj.weight` directly instead of
calling sub-layers, so a LoRA update cannot sit beside them as for a Linear. Here the forward runs
the original module with `W_in + ΔW_in` and `W_out + ΔW_out` substituted for its two weights
(`torch.func.functional_call`): the adapters get gradients, the base weights are never touched.

Layout (as in HF PEFT, so files move both ways): `lora_A` (r × E) / `lora_B` (3E × r) on this layer
for the q/k/v projection, and the output projection wrapped in a LoRA `Linear` inside the base
layer (`<name>.base_layer.out_proj.lora_A...`).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.func import functional_call

from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.layer import LoraLayer
from peftcore.tuners.lora.linear import Linear

# Attributes of nn.MultiheadAttention that code reads off the layer; served from the wrapped module.
_FORWARDED = (
    "embed_dim",
    "kdim",
    "vdim",
    "_qkv_same_embed_dim",
    "num_heads",
    "dropout",
    "batch_first",
    "head_dim",
    "in_proj_weight",
    "in_proj_bias",
    "bias_k",
    "bias_v",
    "add_zero_attn",
)


class MultiheadAttention(nn.Module, LoraLayer):
    """LoRA on both projections of a multi-head attention layer (query/key/value of equal size)."""

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
        **kwargs: Any,
    ) -> None:
        if config is not None:
            self.check_supported(base_layer, config)
        nn.Module.__init__(self)
        LoraLayer.__init__(self, base_layer, **kwargs)
        mha = cast(nn.MultiheadAttention, base_layer)
        if not isinstance(mha.out_proj, nn.Linear):
            raise TypeError(
                f"out_proj must be an instance of nn.Linear for {type(self).__name__}, got {type(mha.out_proj).__name__}"
            )
        mha.out_proj = Linear(mha.out_proj, adapter_name)  # type: ignore[assignment]
        self._active_adapter = adapter_name
        if config is not None and r > 0:
            self.update_layer(adapter_name, r, lora_alpha, config, **kwargs)

    @staticmethod
    def check_supported(base_layer: nn.Module, config: LoraConfig) -> None:
        """Raise if LoRA cannot adapt this attention layer with this config."""
        if not getattr(base_layer, "_qkv_same_embed_dim", True):
            raise ValueError(
                "Only same embed for query/key/value is supported as of now for MultiheadAttention: this layer has "
                "kdim/vdim different from embed_dim. Exclude it from target_modules"
            )
        if config.use_dora:
            raise ValueError("MultiheadAttention does not support DoRA (yet), please set use_dora to False")

    def __getattr__(self, name: str) -> Any:
        if name in _FORWARDED:
            return getattr(self._modules["base_layer"], name)
        return super().__getattr__(name)

    @property
    def _out_proj(self) -> Linear:
        return cast(Linear, cast(nn.MultiheadAttention, self.base_layer).out_proj)

    @property
    def out_proj(self) -> nn.Module:
        """The original output projection (as `nn.MultiheadAttention.out_proj`)."""
        return self._out_proj.get_base_layer()

    def merge_masks(self, *args: Any, **kwargs: Any) -> Any:
        return cast(nn.MultiheadAttention, self.get_base_layer()).merge_masks(*args, **kwargs)

    def _create_adapter(
        self, adapter_name: str, r: int, lora_bias: bool, tensor_kwargs: dict[str, Any]
    ) -> None:
        self.lora_A[adapter_name] = nn.Linear(self.in_features, r, bias=False, **tensor_kwargs)
        self.lora_B[adapter_name] = nn.Linear(r, self.out_features, bias=False, **tensor_kwargs)

    def update_layer(
        self,
        adapter_name: str,
        r: int,
        lora_alpha: float,
        config: LoraConfig,
        low_cpu_mem_usage: bool = False,
        autocast_adapter_dtype: bool = True,
        **kwargs: Any,
    ) -> None:
        """Add the adapter to the q/k/v projection here and to the output projection's layer."""
        options = {"low_cpu_mem_usage": low_cpu_mem_usage, "autocast_adapter_dtype": autocast_adapter_dtype}
        super().update_layer(adapter_name, r, lora_alpha, config, **options, **kwargs)
        self._out_proj.update_layer(adapter_name, r, lora_alpha, config, **options, **kwargs)

    def _lora_rows(self, adapter_name: str) -> torch.Tensor:
        a = cast(nn.Linear, self.lora_A[adapter_name]).weight
        b = cast(nn.Linear, self.lora_B[adapter_name]).weight
        if a.device.type == "cpu" and a.dtype in (torch.float16, torch.bfloat16):
            return (b.float() @ a.float()).to(a.dtype)
        return b @ a  # (3E, E)

    def merge(self, safe_merge: bool = False, adapter_names: Any = None) -> None:
        """Merge the q/k/v update here and the output projection's update in its own layer."""
        names = self.adapters_to_merge(adapter_names)
        super().merge(safe_merge=safe_merge, adapter_names=names)
        self._out_proj.merge(safe_merge=safe_merge, adapter_names=names)

    def unmerge(self) -> None:
        super().unmerge()
        self._out_proj.unmerge()

    def unwrapped(self) -> nn.Module:
        """The original attention layer, its output projection unwrapped too."""
        mha = cast(nn.MultiheadAttention, self.base_layer)
        mha.out_proj = self._out_proj.get_base_layer()  # type: ignore[assignment]
        return mha

    def _restore_weights(self) -> None:
        """Kept for HF PEFT compatibility. peftcore never swaps the attention weights out (the forward
        substitutes them for one call only), so there is nothing to restore."""

    def forward(self, query: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if "adapter_names" in kwargs:
            if kwargs["adapter_names"] is not None:
                raise TypeError(
                    "lora.MultiheadAttention does not support mixed adapter batches: its forward uses whole weight "
                    "matrices. Call the model without adapter_names"
                )
            kwargs.pop("adapter_names")
        if self._skip_adapters():
            return self.base_layer(query, *args, **kwargs)
        mha = cast(nn.MultiheadAttention, self.base_layer)
        in_w: torch.Tensor = mha.in_proj_weight
        out_layer = self._out_proj
        out_w = cast(torch.Tensor, cast(Any, out_layer.get_base_layer()).weight)
        new_in, new_out = in_w, out_w
        for name in self.active_adapters:
            if name in self.r and name not in self.merged_adapters:
                new_in = new_in + self.get_delta_weight(name).to(in_w.dtype)
            if name in out_layer.r and name not in out_layer.merged_adapters:
                new_out = new_out + out_layer.get_delta_weight(name).to(out_w.dtype)
        if new_in is in_w and new_out is out_w:
            return self.base_layer(query, *args, **kwargs)
        params = {"in_proj_weight": new_in, "out_proj.base_layer.weight": new_out}
        return functional_call(mha, params, (query, *args), kwargs)
