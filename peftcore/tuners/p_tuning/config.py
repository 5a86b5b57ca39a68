"""`PromptEncoderConfig` and `PromptEncoderReparameterizationType` (P-tuning): HF PEFT's fields and defaults."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from peftcore.config import PeftType
from peftcore.tuners.config_checks import check_positive_int, check_probability
from peftcore.tuners.prompt import PromptLearningConfig


class PromptEncoderReparameterizationType(str, enum.Enum):
    """The network that produces P-tuning's virtual tokens from a trained table."""

    MLP = "MLP"
    LSTM = "LSTM"


@dataclass
class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning: virtual-token embeddings produced by a small network from a trained table.

    Args:
        encoder_reparameterization_type: "MLP" (three linear layers with ReLU) or "LSTM" (a
            bidirectional LSTM followed by a two-layer MLP).
        encoder_hidden_size: the network's hidden size; unset: the model's hidden size.
        encoder_num_layers: LSTM layers (the MLP always has three linear layers; other values warn).
        encoder_dropout: dropout between LSTM layers.
    """

    PEFT_TYPE: ClassVar[PeftType] = PeftType.P_TUNING

    encoder_reparameterization_type: PromptEncoderReparameterizationType | str = (
        PromptEncoderReparameterizationType.MLP
    )
    encoder_hidden_size: int | None = None
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        kind: Any = getattr(
            self.encoder_reparameterization_type, "value", self.encoder_reparameterization_type
        )
        try:
            self.encoder_reparameterization_type = PromptEncoderReparameterizationType(kind)
        except ValueError:
            raise ValueError(
                f"encoder_reparameterization_type={kind!r} is not supported; use 'MLP' (recommended) or 'LSTM'"
            ) from None
        if self.encoder_hidden_size is not None:
            check_positive_int("encoder_hidden_size", self.encoder_hidden_size, "128")
        check_positive_int("encoder_num_layers", self.encoder_num_layers, "2")
        check_probability("encoder_dropout", self.encoder_dropout)

    def _adapt_to_model(self, model_config: dict[str, Any]) -> None:
        if self.encoder_hidden_size is None:
            self.encoder_hidden_size = self.token_dim
