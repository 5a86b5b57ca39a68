"""LoRA on `nn.MultiheadAttention`: on its packed q/k/v projection and on its output projection.

`nn.MultiheadAttention.forward` reads `in_proj_weight` and `out_proj.weight` directly instead of
calling sub-layers, so a LoRA update cannot sit beside them as for a Linear. Here the forward does
what the original module's forward does (`F.multi_head_attention_forward`), handing it
`W_in + ΔW_in` and `W_out + ΔW_out` as the two weights: the adapters get gradients, the base weights
are never touched or swapped (which also keeps sharded wrappers such as FSDP, whose parameters are
views, working).

Layout (as in HF PEFT, so files move both ways): `lora_A` (r × E) / `lora_B` (3E × r) on this layer
for the q/k/v projection, and the output projection wrapped in a LoRA `Linear` inside the base
layer (`<name>.base_layer.out_proj.lora_A...`).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

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
        hands the adapted weights to the attention function), so there is nothing to restore."""

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
        return _attend(mha, new_in, new_out, query, *args, **kwargs)


def _attend(
    mha: nn.MultiheadAttention,
    in_proj_weight: torch.Tensor,
    out_proj_weight: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`nn.MultiheadAttention.forward` (its general path) with the two projection weights given.

    Same arguments and results as the module's forward; only layers with equal query/key/value sizes
    reach here (`MultiheadAttention.check_supported`).
    """
    batched = query.dim() == 3
    key_padding_mask = F._canonical_mask(
        mask=key_padding_mask,
        mask_name="key_padding_mask",
        other_type=F._none_or_dtype(attn_mask),
        other_name="attn_mask",
        target_type=query.dtype,
    )
    attn_mask = F._canonical_mask(
        mask=attn_mask,
        mask_name="attn_mask",
        other_type=None,
        other_name="",
        target_type=query.dtype,
        check_other=False,
    )
    if mha.batch_first and batched:
        query, key, value = (t.transpose(1, 0) for t in (query, key, value))
    out_bias = cast(nn.Linear, cast(Linear, mha.out_proj).get_base_layer()).bias
    output, weights = F.multi_head_attention_forward(
        query,
        key,
        value,
        mha.embed_dim,
        mha.num_heads,
        in_proj_weight,
        mha.in_proj_bias,
        mha.bias_k,
        mha.bias_v,
        mha.add_zero_attn,
        mha.dropout,
        out_proj_weight,
        out_bias,
        training=mha.training,
        key_padding_mask=key_padding_mask,
        need_weights=need_weights,
        attn_mask=attn_mask,
        average_attn_weights=average_attn_weights,
        is_causal=is_causal,
    )
    if mha.batch_first and batched:
        output = output.transpose(1, 0)
    return output, weights
