from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.layer import Conv2d, Embedding, Linear, LoraLayer
from peftcore.tuners.lora.model import LoraModel

__all__ = ["Conv2d", "Embedding", "Linear", "LoraConfig", "LoraLayer", "LoraModel"]
