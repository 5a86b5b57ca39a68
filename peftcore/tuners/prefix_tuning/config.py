"""`PrefixTuningConfig`: HF PEFT's fields and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from peftcore.config import PeftType
from peftcore.tuners.config_checks import check_positive_int
from peftcore.tuners.prompt import PromptLearningConfig


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning: trained attention keys and values for `num_virtual_tokens` positions in every layer.

    Args:
        encoder_hidden_size: the hidden size of the projection MLP (`prefix_projection=True`); unset:
            the model's hidden size.
        prefix_projection: produce the keys and values with a two-layer MLP (tanh) from a trained
            table of `token_dim` vectors, instead of training them directly.
        init_weights: "zero" starts the prefix (or the MLP's last layer) at zero; None: random.
    """

    PEFT_TYPE: ClassVar[PeftType] = PeftType.PREFIX_TUNING

    encoder_hidden_size: int | None = None
    prefix_projection: bool = False
    init_weights: Literal["zero"] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder_hidden_size is not None:
            check_positive_int("encoder_hidden_size", self.encoder_hidden_size, "512")
        if self.init_weights not in (None, "zero"):
            raise ValueError(f"init_weights={self.init_weights!r} must be 'zero' or None (random)")

    def _adapt_to_model(self, model_config: dict[str, Any]) -> None:
        # Grouped-query attention caches fewer key/value heads than it has query heads: the prefix has
        # the cache's shape, so token_dim and num_attention_heads describe the key/value heads.
        kv_heads = model_config.get("num_key_value_heads")
        if kv_heads is not None and self.token_dim and self.num_attention_heads:
            head_dim = model_config.get("head_dim") or self.token_dim // self.num_attention_heads
            self.token_dim = head_dim * kv_heads
            self.num_attention_heads = kv_heads
        if self.encoder_hidden_size is None:
            self.encoder_hidden_size = self.token_dim
