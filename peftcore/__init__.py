"""peftcore: parameter-efficient fine-tuning with the Hugging Face PEFT API and adapter format."""

from peftcore import tuners as tuners  # registers every method before anything looks one up
from peftcore._version import __version__
from peftcore.auto import (
    AutoPeftModel,
    AutoPeftModelForCausalLM,
    AutoPeftModelForFeatureExtraction,
    AutoPeftModelForQuestionAnswering,
    AutoPeftModelForSeq2SeqLM,
    AutoPeftModelForSequenceClassification,
    AutoPeftModelForTokenClassification,
)
from peftcore.base_state_dict import get_base_model_state_dict, set_base_model_state_dict
from peftcore.config import PeftConfig, PeftType, TaskType
from peftcore.errors import PeftWarning
from peftcore.kbit import prepare_model_for_kbit_training
from peftcore.mapping import (
    PEFT_TYPE_TO_CONFIG_MAPPING,
    PEFT_TYPE_TO_PREFIX_MAPPING,
    PEFT_TYPE_TO_TUNER_MAPPING,
    get_peft_model,
    inject_adapter_in_model,
    register_peft_method,
)
from peftcore.peft_model import PeftModel
from peftcore.serialization import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict
from peftcore.task_models import (
    MODEL_TYPE_TO_PEFT_MODEL_MAPPING,
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
)
from peftcore.tuners.adalora import AdaLoraConfig, AdaLoraModel
from peftcore.tuners.ia3 import IA3Config, IA3Model
from peftcore.tuners.loha import LoHaConfig, LoHaModel
from peftcore.tuners.lokr import LoKrConfig, LoKrModel
from peftcore.tuners.lora import LoraConfig, LoraModel
from peftcore.tuners.p_tuning import PromptEncoder, PromptEncoderConfig, PromptEncoderReparameterizationType
from peftcore.tuners.prefix_tuning import PrefixEncoder, PrefixTuningConfig
from peftcore.tuners.prompt import PromptLearningConfig
from peftcore.tuners.prompt_tuning import PromptEmbedding, PromptTuningConfig, PromptTuningInit

__all__ = [
    "MODEL_TYPE_TO_PEFT_MODEL_MAPPING",
    "PEFT_TYPE_TO_CONFIG_MAPPING",
    "PEFT_TYPE_TO_PREFIX_MAPPING",
    "PEFT_TYPE_TO_TUNER_MAPPING",
    "AdaLoraConfig",
    "AdaLoraModel",
    "AutoPeftModel",
    "AutoPeftModelForCausalLM",
    "AutoPeftModelForFeatureExtraction",
    "AutoPeftModelForQuestionAnswering",
    "AutoPeftModelForSeq2SeqLM",
    "AutoPeftModelForSequenceClassification",
    "AutoPeftModelForTokenClassification",
    "IA3Config",
    "IA3Model",
    "LoHaConfig",
    "LoHaModel",
    "LoKrConfig",
    "LoKrModel",
    "LoraConfig",
    "LoraModel",
    "PeftConfig",
    "PeftModel",
    "PeftModelForCausalLM",
    "PeftModelForFeatureExtraction",
    "PeftModelForQuestionAnswering",
    "PeftModelForSeq2SeqLM",
    "PeftModelForSequenceClassification",
    "PeftModelForTokenClassification",
    "PeftType",
    "PeftWarning",
    "PrefixEncoder",
    "PrefixTuningConfig",
    "PromptEmbedding",
    "PromptEncoder",
    "PromptEncoderConfig",
    "PromptEncoderReparameterizationType",
    "PromptLearningConfig",
    "PromptTuningConfig",
    "PromptTuningInit",
    "TaskType",
    "__version__",
    "get_base_model_state_dict",
    "get_peft_model",
    "get_peft_model_state_dict",
    "inject_adapter_in_model",
    "load_peft_weights",
    "prepare_model_for_kbit_training",
    "register_peft_method",
    "set_base_model_state_dict",
    "set_peft_model_state_dict",
]
