"""(IA)³: learned vectors that rescale activations. Registers itself once."""

from peftcore.mapping import register_peft_method
from peftcore.tuners.ia3.config import IA3Config
from peftcore.tuners.ia3.layer import Conv2d, Conv3d, IA3Layer, Linear
from peftcore.tuners.ia3.model import IA3Model

register_peft_method(name="ia3", config_cls=IA3Config, model_cls=IA3Model, prefix="ia3_")

__all__ = ["Conv2d", "Conv3d", "IA3Config", "IA3Layer", "IA3Model", "Linear"]
