"""LoHa: a low-rank Hadamard-product weight update. Registers itself once."""

from peftcore.mapping import register_peft_method
from peftcore.tuners.loha.config import LoHaConfig
from peftcore.tuners.loha.layer import Conv1d, Conv2d, Linear, LoHaLayer
from peftcore.tuners.loha.model import LoHaModel

register_peft_method(name="loha", config_cls=LoHaConfig, model_cls=LoHaModel, prefix="hada_")

__all__ = ["Conv1d", "Conv2d", "Linear", "LoHaConfig", "LoHaLayer", "LoHaModel"]
