"""Prompt tuning: trained virtual-token embeddings before the input. Registers itself once."""

from peftcore.mapping import register_peft_method
from peftcore.tuners.prompt_tuning.config import PromptTuningConfig, PromptTuningInit
from peftcore.tuners.prompt_tuning.model import PromptEmbedding

register_peft_method(name="prompt_tuning", config_cls=PromptTuningConfig, model_cls=PromptEmbedding)

__all__ = ["PromptEmbedding", "PromptTuningConfig", "PromptTuningInit"]
