"""Methods, one package each (config / layers / model), on two shared bases: `base.BaseTuner` (+
`base_layer.BaseTunerLayer`) for adapter-layer methods and `prompt` for prompt-learning methods.
Importing this package registers every method (see `peftcore.mapping`)."""

from peftcore.tuners.base import BaseTuner
from peftcore.tuners.base_layer import BaseTunerLayer
from peftcore.tuners.lora import LoraConfig, LoraModel

__all__ = ["BaseTuner", "BaseTunerLayer", "LoraConfig", "LoraModel"]
