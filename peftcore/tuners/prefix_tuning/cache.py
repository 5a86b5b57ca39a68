"""Turning a trained prefix into a transformers cache object (transformers 5's `DynamicCache` /
`EncoderDecoderCache`), so every attention layer sees `n` extra key/value positions first.

The prefix `P` is (n, num_layers · 2 · token_dim): per position, block `2l` holds layer `l`'s keys and
block `2l + 1` its values, each `heads × head_dim`. A decoder-only model gets block pair `l` in layer
`l`. An encoder-decoder model gets the prefix in its decoder's self-attention only; there, layer `l`
reads block pair `2l mod num_layers` — the layout HF PEFT uses (it lays the prefix out for self- and
cross-attention and then drops the cross-attention half), kept so that a saved prefix means the same
in both libraries.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from peftcore.tuners.prefix_tuning.config import PrefixTuningConfig


def prefix_cache(prefix: torch.Tensor, config: PrefixTuningConfig, batch_size: int, model: nn.Module) -> Any:
    """A fresh cache holding `prefix` (n, layers·2·token_dim) for `batch_size` rows, in the model's dtype."""
    layers = config.num_layers or 0
    heads = config.num_attention_heads or 1
    n = prefix.shape[0]
    head_dim = (config.token_dim or 0) // heads
    dtype = _model_dtype(model)
    if dtype is not None:
        prefix = prefix.to(dtype)
    # (n, 2·layers, heads, head_dim) → (2·layers, batch, heads, n, head_dim): one key or value block each.
    blocks = prefix.view(n, 2 * layers, heads, head_dim).permute(1, 2, 0, 3)
    blocks = blocks.unsqueeze(1).expand(2 * layers, batch_size, heads, n, head_dim)
    model_config = getattr(model, "config", None)
    self_attention = DynamicCache(config=model_config) if model_config is not None else DynamicCache()
    encoder_decoder = (config.num_transformer_submodules or 1) == 2
    for layer in range(layers):
        source = (2 * layer) % layers if encoder_decoder else layer
        self_attention.update(blocks[2 * source], blocks[2 * source + 1], layer)
    if not encoder_decoder:
        return self_attention
    cross_attention = DynamicCache(config=model_config) if model_config is not None else DynamicCache()
    return EncoderDecoderCache(self_attention, cross_attention)


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    dtype = getattr(model, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None
