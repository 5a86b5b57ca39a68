"""LoRA on `nn.Embedding`: `lora_embedding_A` (r × vocab) and `lora_embedding_B` (dim × r).

The update of token t is `s · B A[:, t]`, i.e. a lookup of t in Aᵀ followed by Bᵀ; the merged
embedding table is `W + s · (B A)ᵀ`. At init A = 0 and B ~ N(0, 1) (the reverse of Linear), so the
adapter starts as the identity. With DoRA the magnitude has one entry per embedding dimension and
scales base and update alike: `y = (m / ‖Wᵀ + s·B A‖) · (W[t] + s · B A[:, t])`.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.layer import LoraLayer


class Embedding(nn.Module, LoraLayer):
    """LoRA on an embedding table (no dropout, no lora_bias: the input is a token id)."""

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
        nn.Module.__init__(self)
        LoraLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        if config is not None and r > 0:
            self.update_layer(adapter_name, r, lora_alpha, config, **kwargs)

    @property
    def _table(self) -> nn.Embedding:
        return cast(nn.Embedding, self.get_base_layer())

    def _check_update(self, adapter_name: str, r: int, config: LoraConfig) -> None:
        if config.lora_bias:
            raise ValueError(
                "lora_bias=True is not supported for Embedding: an embedding lookup has no bias to adapt. Set "
                "lora_bias=False or exclude the embedding from target_modules"
            )

    def _create_adapter(
        self, adapter_name: str, r: int, lora_bias: bool, tensor_kwargs: dict[str, Any]
    ) -> None:
        table = self._table
        self.lora_embedding_A[adapter_name] = nn.Parameter(
            torch.randn(r, table.num_embeddings, **tensor_kwargs)
        )
        self.lora_embedding_B[adapter_name] = nn.Parameter(
            torch.randn(table.embedding_dim, r, **tensor_kwargs)
        )

    def reset_lora_parameters(self, adapter_name: str, init_lora_weights: bool | str) -> None:
        if init_lora_weights is False or adapter_name not in self.lora_embedding_A:
            return
        with torch.no_grad():
            nn.init.zeros_(self.lora_embedding_A[adapter_name])
            nn.init.normal_(self.lora_embedding_B[adapter_name])

    def _lora_rows(self, adapter_name: str) -> torch.Tensor:
        a, b = self.lora_embedding_A[adapter_name], self.lora_embedding_B[adapter_name]
        if a.device.type == "cpu" and a.dtype in (torch.float16, torch.bfloat16):
            return (b.float() @ a.float()).to(a.dtype)
        return b @ a  # (dim, vocab)

    def _weight_rows(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.t()

    def _weight_from_rows(self, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return rows.t()

    def _embed(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        base = self._table
        return F.embedding(
            x,
            table,
            padding_idx=base.padding_idx,
            max_norm=base.max_norm,
            norm_type=base.norm_type,
            scale_grad_by_freq=base.scale_grad_by_freq,
            sparse=base.sparse,
        )

    def _lora_output(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_embedding_A[adapter_name], self.lora_embedding_B[adapter_name]
        return (self._embed(x, a.t()) @ b.t()) * self.scaling[adapter_name]

    def forward(self, x: torch.Tensor, *args: Any, adapter_names: Any = None, **kwargs: Any) -> torch.Tensor:
        if self._skip_adapters():
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        for name in self.active_adapters:
            if name not in self.r or name in self.merged_adapters:
                continue
            update = self._lora_output(name, x)
            if name in self.lora_magnitude_vector:
                magnitude = self._magnitude(name)
                scale = magnitude / self._dora_norm(name, self._table.weight.detach()).detach()
                result = (scale * (result.to(update.dtype) + update)).to(result.dtype)
            else:
                result = result + update.to(result.dtype)
        return result
