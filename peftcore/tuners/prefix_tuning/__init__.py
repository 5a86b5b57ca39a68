"""Prefix tuning: trained attention keys and values before the input. Registers itself once."""

from peftcore.mapping import register_peft_method
from peftcore.tuners.prefix_tuning.config import PrefixTuningConfig
from peftcore.tuners.prefix_tuning.model import PrefixEncoder

register_peft_method(name="prefix_tuning", config_cls=PrefixTuningConfig, model_cls=PrefixEncoder)

__all__ = ["PrefixEncoder", "PrefixTuningConfig"]
