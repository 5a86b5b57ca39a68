"""peftcore: parameter-efficient fine-tuning with the Hugging Face PEFT API and adapter format."""

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
from peftcore.config import PeftConfig, PeftType, TaskType
from peftcore.mapping import MODEL_TYPE_TO_PEFT_MODEL_MAPPING, get_peft_model
from peftcore.peft_model import PeftModel
from peftcore.serialization import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict
from peftcore.task_models import (
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
)
from peftcore.tuners.lora import LoraConfig, LoraModel

__all__ = [
    "MODEL_TYPE_TO_PEFT_MODEL_MAPPING",
    "AutoPeftModel",
    "AutoPeftModelForCausalLM",
    "AutoPeftModelForFeatureExtraction",
    "AutoPeftModelForQuestionAnswering",
    "AutoPeftModelForSeq2SeqLM",
    "AutoPeftModelForSequenceClassification",
    "AutoPeftModelForTokenClassification",
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
    "TaskType",
    "__version__",
    "get_peft_model",
    "get_peft_model_state_dict",
    "load_peft_weights",
    "set_peft_model_state_dict",
]
