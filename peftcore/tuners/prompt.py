"""What every prompt-learning method shares: virtual tokens, their config, and rewriting the inputs.

Prompt-learning methods (prompt tuning, P-tuning, prefix tuning) leave the model's layers alone and
learn `num_virtual_tokens` extra input vectors instead. A method provides a `PromptEncoder`
subclass that turns the virtual token ids `0..n-1` into vectors; everything else is shared here:

- `PromptLearningConfig`: the fields every such method writes (`num_virtual_tokens`, `token_dim`,
  `num_transformer_submodules`, `num_layers`, `num_attention_heads`), filled from the model's config
  with `fill_from_model_config`.
- `PromptEncoder.prompt_embeddings()`: the tensor saved on disk under the one key
  `prompt_embeddings` (FORMAT.md): the encoder's output, not its parameters.
- `prepend_virtual_tokens`, `extend_attention_mask`, `pad_labels`: the decoder-only input rewrite —
  virtual tokens before the real ones, `n` ones before the attention mask, `n` × -100 before labels.

The PeftModel wiring (forward / generate through a prompt encoder) comes with the first method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peftcore.config import PeftConfig

# The label value the loss ignores (transformers' convention); virtual tokens get it.
IGNORE_INDEX = -100


@dataclass
class PromptLearningConfig(PeftConfig):
    """Fields shared by prompt-learning methods.

    Args:
        num_virtual_tokens: how many virtual tokens the method learns.
        token_dim: the model's hidden size (the size of one virtual token).
        num_transformer_submodules: 1 for decoder-only models, 2 for encoder-decoder models.
        num_attention_heads: the model's attention heads (prefix tuning shapes its cache with it).
        num_layers: the model's transformer layers.
    """

    num_virtual_tokens: int | None = None
    token_dim: int | None = None
    num_transformer_submodules: int | None = None
    num_attention_heads: int | None = None
    num_layers: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_layers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(
                    f"{name}={value!r} must be a positive integer (or None to take it from the model)"
                )

    @property
    def is_prompt_learning(self) -> bool:
        return True

    def fill_from_model_config(self, model_config: Any) -> None:
        """Take the unset dimensions from a transformers config (in place)."""
        data = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(vars(model_config))
        if self.num_layers is None:
            self.num_layers = _first(data, "num_hidden_layers", "num_layers", "n_layer", "num_decoder_layers")
        if self.token_dim is None:
            self.token_dim = _first(data, "hidden_size", "n_embd", "d_model")
        if self.num_attention_heads is None:
            self.num_attention_heads = _first(data, "num_attention_heads", "n_head", "num_heads")
        if self.num_transformer_submodules is None:
            self.num_transformer_submodules = 2 if data.get("is_encoder_decoder") else 1
        missing = [n for n in ("num_layers", "token_dim", "num_attention_heads") if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"could not read {missing} from the model's config ({type(model_config).__name__}); set them in the "
                f"{type(self).__name__} explicitly"
            )

    @property
    def total_virtual_tokens(self) -> int:
        """Rows of `prompt_embeddings`: the virtual tokens of every transformer submodule."""
        if self.num_virtual_tokens is None:
            raise ValueError("num_virtual_tokens is not set; give the config a number of virtual tokens")
        return self.num_virtual_tokens * (self.num_transformer_submodules or 1)


def _first(data: dict[str, Any], *keys: str) -> Any:
    return next((data[k] for k in keys if data.get(k) is not None), None)


class PromptEncoder(nn.Module):
    """One prompt-learning adapter: maps virtual token ids to vectors. A method implements `forward`."""

    def __init__(self, config: PromptLearningConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("virtual_token_ids", torch.arange(config.total_virtual_tokens), persistent=False)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Vectors for `indices` (total_virtual_tokens,) → (total_virtual_tokens, dim)."""
        raise NotImplementedError

    def prompt_embeddings(self) -> torch.Tensor:
        """The tensor saved as `prompt_embeddings`: the encoder's output for every virtual token."""
        with torch.no_grad():
            return self(self.virtual_token_ids).detach()

    def batch_prompts(self, batch_size: int) -> torch.Tensor:
        """(batch, total_virtual_tokens, dim): the virtual tokens for every row of a batch."""
        prompts = self(self.virtual_token_ids)
        return prompts.unsqueeze(0).expand(batch_size, *prompts.shape)


def prepend_virtual_tokens(inputs_embeds: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """`[prompts, inputs_embeds]` along the sequence: (batch, n + seq, dim)."""
    if prompts.shape[0] != inputs_embeds.shape[0] or prompts.shape[-1] != inputs_embeds.shape[-1]:
        raise ValueError(
            f"prompts of shape {tuple(prompts.shape)} do not fit inputs_embeds of shape "
            f"{tuple(inputs_embeds.shape)}: batch and hidden size must agree"
        )
    return torch.cat([prompts.to(inputs_embeds.dtype), inputs_embeds], dim=1)


def extend_attention_mask(
    attention_mask: torch.Tensor | None, num_virtual_tokens: int
) -> torch.Tensor | None:
    """The mask with `num_virtual_tokens` ones in front (virtual tokens are always attended to)."""
    if attention_mask is None:
        return None
    ones = attention_mask.new_ones(attention_mask.shape[0], num_virtual_tokens)
    return torch.cat([ones, attention_mask], dim=1)


def pad_labels(labels: torch.Tensor | None, num_virtual_tokens: int) -> torch.Tensor | None:
    """The labels with `num_virtual_tokens` × -100 in front (no loss on virtual tokens)."""
    if labels is None:
        return None
    pad = labels.new_full((labels.shape[0], num_virtual_tokens), IGNORE_INDEX)
    return torch.cat([pad, labels], dim=1)
