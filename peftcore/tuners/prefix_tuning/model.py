"""`PrefixEncoder`: prefix tuning's encoder, every layer's key and value vectors for `n` extra positions.

    direct:      P = E                                  E: (n, num_layers · 2 · token_dim)
    projection:  P = W2 tanh(W1 E' + b1) + b2           E': (n, token_dim)

Row `i` of `P` holds position `i`'s keys and values of every layer ([layer][key | value][heads × head
dim]); `prefix_cache.py` turns it into the model's cache. Only `P` is saved (`prompt_embeddings`).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from peftcore.tuners.prefix_tuning.cache import prefix_cache
from peftcore.tuners.prefix_tuning.config import PrefixTuningConfig
from peftcore.tuners.prompt import BasePromptEncoder


class PrefixEncoder(BasePromptEncoder):
    """Prefix tuning's encoder (HF PEFT's name; submodules `embedding` and `transform` as in HF PEFT)."""

    injects = "cache"

    def __init__(self, config: PrefixTuningConfig) -> None:
        super().__init__(config)
        token_dim = config.token_dim or 0
        width = (config.num_layers or 0) * 2 * token_dim
        self.prefix_projection = config.prefix_projection
        zero = config.init_weights == "zero"
        if self.prefix_projection and not config.inference_mode:
            hidden = config.encoder_hidden_size or token_dim
            self.embedding = nn.Embedding(config.num_virtual_tokens or 0, token_dim)
            self.transform = nn.Sequential(nn.Linear(token_dim, hidden), nn.Tanh(), nn.Linear(hidden, width))
            if zero:
                last = cast(nn.Linear, self.transform[-1])
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
        else:
            self.embedding = nn.Embedding(config.num_virtual_tokens or 0, width)
            if zero:
                nn.init.zeros_(self.embedding.weight)

    def _saved_rows(self) -> int:
        # One prefix serves every submodule (the decoder's self-attention in encoder-decoder models).
        return self.config.num_virtual_tokens or 0

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        embeds = self.embedding(indices)
        if self.prefix_projection and not self.config.inference_mode:
            return self.transform(embeds)
        return embeds

    def build_cache(self, batch_size: int, model: nn.Module) -> Any:
        """The prefix as `model`'s attention cache for a batch (see `cache.py`)."""
        return prefix_cache(self.outputs(), cast(PrefixTuningConfig, self.config), batch_size, model)
