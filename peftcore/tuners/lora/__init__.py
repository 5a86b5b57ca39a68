"""LoRA: low-rank adapters (with DoRA, rsLoRA, lora_bias, per-parameter LoRA). Registers itself once."""

from peftcore.mapping import register_peft_method
from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.conv import Conv1d, Conv2d, Conv3d
from peftcore.tuners.lora.embedding import Embedding
from peftcore.tuners.lora.layer import LoraLayer
from peftcore.tuners.lora.linear import Linear
from peftcore.tuners.lora.mha import MultiheadAttention
from peftcore.tuners.lora.model import LoraModel
from peftcore.tuners.lora.param import ParamWrapper

register_peft_method(name="lora", config_cls=LoraConfig, model_cls=LoraModel, prefix="lora_")

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "Embedding",
    "Linear",
    "LoraConfig",
    "LoraLayer",
    "LoraModel",
    "MultiheadAttention",
    "ParamWrapper",
]
