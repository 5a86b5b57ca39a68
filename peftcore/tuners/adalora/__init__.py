"""AdaLoRA: LoRA in SVD form with a rank budget that shrinks during training. Registers itself once."""

from peftcore.mapping import register_peft_method
from peftcore.tuners.adalora.allocator import RankAllocator
from peftcore.tuners.adalora.config import AdaLoraConfig
from peftcore.tuners.adalora.layer import AdaLoraLayer, SVDConv2d, SVDLinear
from peftcore.tuners.adalora.model import AdaLoraModel

register_peft_method(name="adalora", config_cls=AdaLoraConfig, model_cls=AdaLoraModel, prefix="lora_")

__all__ = ["AdaLoraConfig", "AdaLoraLayer", "AdaLoraModel", "RankAllocator", "SVDConv2d", "SVDLinear"]
