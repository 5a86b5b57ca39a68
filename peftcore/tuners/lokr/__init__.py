"""LoKr: a Kronecker-product weight update. Registers itself once."""

from peftcore.mapping import register_peft_method
from peftcore.tuners.lokr.config import LoKrConfig
from peftcore.tuners.lokr.layer import Conv1d, Conv2d, Linear, LoKrLayer
from peftcore.tuners.lokr.model import LoKrModel

register_peft_method(name="lokr", config_cls=LoKrConfig, model_cls=LoKrModel, prefix="lokr_")

__all__ = ["Conv1d", "Conv2d", "Linear", "LoKrConfig", "LoKrLayer", "LoKrModel"]
