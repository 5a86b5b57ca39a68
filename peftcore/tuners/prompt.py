"""What every prompt-learning method shares: virtual tokens, their config, and rewriting the inputs.

Prompt-learning methods (prompt tuning, P-tuning, prefix tuning) leave the model's layers alone and
learn `num_virtual_tokens` extra vectors instead. A method provides a `BasePromptEncoder` subclass
that turns the virtual token ids `0..n-1` into vectors; what happens to them is declared by the
encoder's `injects`:

- "embeddings" (prompt tuning, P-tuning): the vectors are input embeddings, placed before the real
  tokens (`prepend_virtual_tokens`; the attention mask gets `n` ones, causal-LM labels `n` × -100).
- "cache" (prefix tuning): the vectors are each layer's attention keys and values for `n` extra
  positions, handed to the model as a pre-filled cache (`prefix_cache.py`).

On disk every method stores one tensor, `prompt_embeddings`: the encoder's OUTPUT for every virtual
token (FORMAT.md), so a loaded adapter is a plain table of vectors whatever produced them. Loading
therefore always builds the encoder in that frozen "table" form (`inference_mode`).

`PromptLearningConfig` holds the fields every such method writes (`num_virtual_tokens`, `token_dim`,
`num_transformer_submodules`, `num_layers`, `num_attention_heads`, `modules_to_save`), filled from the
model's config with `fill_from_model_config`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from peftcore.config import PeftConfig
from peftcore.tuners.config_checks import as_module_list

# The label value the loss ignores (transformers' convention); virtual tokens get it.
IGNORE_INDEX = -100


@dataclass
class PromptLearningConfig(PeftConfig):
    """Fields shared by prompt-learning methods.

    Args:
        num_virtual_tokens: how many virtual tokens the method learns.
        token_dim: the model's hidden size (the size of one virtual token); unset: from the model.
        num_transformer_submodules: 1 for decoder-only and encoder-only models, 2 for encoder-decoder
            models (seq2seq tasks); unset: from the task.
        num_attention_heads: the model's attention heads (prefix tuning shapes its cache with it).
        num_layers: the model's transformer layers.
        modules_to_save: modules trained in full and saved besides the prompt (e.g. a new head).
    """

    num_virtual_tokens: int | None = None
    token_dim: int | None = None
    num_transformer_submodules: int | None = None
    num_attention_heads: int | None = None
    num_layers: int | None = None
    modules_to_save: list[str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_layers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(
                    f"{name}={value!r} must be a positive integer (or None to take it from the model)"
                )
        self.modules_to_save = as_module_list(self.modules_to_save)

    @property
    def is_prompt_learning(self) -> bool:
        return True

    def fill_from_model_config(self, model_config: Any) -> None:
        """Take the unset dimensions from a transformers config (in place); a VLM's text config counts.

        Raises:
            ValueError: a dimension is neither set nor readable from the model's config.
        """
        data = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(vars(model_config))
        data = data.get("text_config") or data
        if self.num_layers is None:
            layers = getattr(model_config, "num_hidden_layers", None)
            self.num_layers = layers or _first(data, "num_hidden_layers", "num_layers", "n_layer")
        if self.token_dim is None:
            self.token_dim = _first(data, "hidden_size", "n_embd", "d_model")
        if self.num_attention_heads is None:
            self.num_attention_heads = _first(
                data, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"
            )
        if self.num_transformer_submodules is None:
            task = getattr(self.task_type, "value", self.task_type)
            self.num_transformer_submodules = 2 if task == "SEQ_2_SEQ_LM" else 1
        missing = [n for n in ("num_layers", "token_dim", "num_attention_heads") if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"Please specify {missing} in `peft_config`: they could not be read from the model's config "
                f"({type(model_config).__name__}); set them in the {type(self).__name__} explicitly"
            )
        self._adapt_to_model(data)

    def _adapt_to_model(self, model_config: dict[str, Any]) -> None:
        """A method's own adjustments once the dimensions are known (e.g. grouped-query attention)."""

    @property
    def total_virtual_tokens(self) -> int:
        """Rows of `prompt_embeddings`: the virtual tokens of every transformer submodule."""
        if self.num_virtual_tokens is None:
            raise ValueError("num_virtual_tokens is not set; give the config a number of virtual tokens")
        return self.num_virtual_tokens * (self.num_transformer_submodules or 1)


def _first(data: dict[str, Any], *keys: str) -> Any:
    return next((data[k] for k in keys if data.get(k) is not None), None)


class BasePromptEncoder(nn.Module):
    """One prompt-learning adapter: maps virtual token ids to vectors.

    A method sets `injects` and implements `forward` (ids → vectors) and `_saved_rows` (how many
    virtual tokens the saved tensor has). In inference mode (a loaded adapter) `self.embedding` holds
    the saved output itself and `forward` is not used.

    Attributes:
        embedding: the virtual-token table (the encoder's input, or its saved output when loaded).
        injects: "embeddings" (vectors before the input embeddings) or "cache" (attention keys/values).
        needs_word_embeddings: the encoder is built as `cls(config, word_embeddings)`.
    """

    injects: ClassVar[Literal["embeddings", "cache"]] = "embeddings"
    # True for an encoder built as `cls(config, word_embeddings)` (it starts from the model's embeddings).
    needs_word_embeddings: ClassVar[bool] = False
    embedding: nn.Embedding

    def __init__(self, config: PromptLearningConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("virtual_token_ids", torch.arange(self._saved_rows()), persistent=False)

    def _saved_rows(self) -> int:
        return self.config.total_virtual_tokens

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Vectors for `indices` (rows,) → (rows, dim)."""
        raise NotImplementedError

    def build_cache(self, batch_size: int, model: nn.Module) -> Any:
        """The virtual tokens as `model`'s attention cache (encoders that inject a "cache" only)."""
        raise NotImplementedError(f"{type(self).__name__} injects {self.injects}, not a cache")

    def outputs(self) -> torch.Tensor:
        """Every virtual token's vector, (rows, dim), with gradients to the encoder's parameters."""
        if self.config.inference_mode:
            return self.embedding.weight
        return self(self.virtual_token_ids.to(self.embedding.weight.device))

    def prompt_embeddings(self) -> torch.Tensor:
        """The tensor saved as `prompt_embeddings`: the encoder's output for every virtual token."""
        with torch.no_grad():
            return self.outputs().detach()

    def batch_prompts(self, batch_size: int) -> torch.Tensor:
        """(batch, rows, dim): the virtual tokens for every row of a batch."""
        prompts = self.outputs()
        return prompts.unsqueeze(0).expand(batch_size, *prompts.shape)

    def load_prompt_embeddings(self, prompt_embeddings: torch.Tensor) -> None:
        """Load a saved `prompt_embeddings` tensor (only into the table form, see the module docstring).

        Raises:
            ValueError: the encoder is trainable (its parameters cannot be recovered from its output),
                or the shapes differ.
        """
        if not self.config.inference_mode:
            raise ValueError(
                "prompt_embeddings hold the encoder's output, which cannot be loaded into a trainable "
                f"{type(self).__name__}; load the adapter with is_trainable=False"
            )
        if tuple(prompt_embeddings.shape) != tuple(self.embedding.weight.shape):
            raise ValueError(
                f"prompt_embeddings of shape {tuple(prompt_embeddings.shape)} do not fit this adapter, which "
                f"expects {tuple(self.embedding.weight.shape)} (num_virtual_tokens × "
                "num_transformer_submodules, token_dim): check the adapter's config against the base model"
            )
        with torch.no_grad():
            self.embedding.weight.copy_(prompt_embeddings.to(self.embedding.weight))


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


def pad_token_type_ids(token_type_ids: torch.Tensor | None, num_virtual_tokens: int) -> torch.Tensor | None:
    """Token types with `num_virtual_tokens` zeros in front (virtual tokens belong to the first segment)."""
    if token_type_ids is None:
        return None
    zeros = token_type_ids.new_zeros(token_type_ids.shape[0], num_virtual_tokens)
    return torch.cat([zeros, token_type_ids], dim=1)


def warn_dropped(name: str) -> None:
    warnings.warn(
        f"{name} are not supported with virtual tokens prepended to the input; ignoring {name}",
        UserWarning,
        stacklevel=4,
    )
