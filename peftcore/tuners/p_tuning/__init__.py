"""P-tuning: virtual tokens produced by a small network (MLP or LSTM). Registers itself once."""

from peftcore.mapping import register_peft_method
from peftcore.tuners.p_tuning.config import PromptEncoderConfig, PromptEncoderReparameterizationType
from peftcore.tuners.p_tuning.model import PromptEncoder

register_peft_method(name="p_tuning", config_cls=PromptEncoderConfig, model_cls=PromptEncoder)

__all__ = ["PromptEncoder", "PromptEncoderConfig", "PromptEncoderReparameterizationType"]
