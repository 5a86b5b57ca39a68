"""Methods, one package each (config / layers / model), on two shared bases: `base.BaseTuner` (+
`base_layer.BaseTunerLayer`) for adapter-layer methods and `prompt` for prompt-learning methods.
Importing this package registers every method (see `peftcore.mapping`)."""

from peftcore.tuners.adalora import AdaLoraConfig, AdaLoraModel
from peftcore.tuners.base import BaseTuner
from peftcore.tuners.base_layer import BaseTunerLayer
from peftcore.tuners.ia3 import IA3Config, IA3Model
from peftcore.tuners.loha import LoHaConfig, LoHaModel
from peftcore.tuners.lokr import LoKrConfig, LoKrModel
from peftcore.tuners.lora import LoraConfig, LoraModel
from peftcore.tuners.p_tuning import PromptEncoder, PromptEncoderConfig, PromptEncoderReparameterizationType
from peftcore.tuners.prefix_tuning import PrefixEncoder, PrefixTuningConfig
from peftcore.tuners.prompt import BasePromptEncoder, PromptLearningConfig
from peftcore.tuners.prompt_tuning import PromptEmbedding, PromptTuningConfig, PromptTuningInit

__all__ = [
    "AdaLoraConfig",
    "AdaLoraModel",
    "BasePromptEncoder",
    "BaseTuner",
    "BaseTunerLayer",
    "IA3Config",
    "IA3Model",
    "LoHaConfig",
    "LoHaModel",
    "LoKrConfig",
    "LoKrModel",
    "LoraConfig",
    "LoraModel",
    "PrefixEncoder",
    "PrefixTuningConfig",
    "PromptEmbedding",
    "PromptEncoder",
    "PromptEncoderConfig",
    "PromptEncoderReparameterizationType",
    "PromptLearningConfig",
    "PromptTuningConfig",
    "PromptTuningInit",
]
