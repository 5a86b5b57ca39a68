"""`get_peft_model` and the task → `PeftModelFor<Task>` registry."""

from __future__ import annotations

from typing import Any

from torch import nn

from peftcore.config import PeftConfig, TaskType
from peftcore.peft_model import PeftModel, validate_adapter_name
from peftcore.task_models import (
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
)

MODEL_TYPE_TO_PEFT_MODEL_MAPPING: dict[str, type[PeftModel]] = {
    TaskType.SEQ_CLS.value: PeftModelForSequenceClassification,
    TaskType.SEQ_2_SEQ_LM.value: PeftModelForSeq2SeqLM,
    TaskType.CAUSAL_LM.value: PeftModelForCausalLM,
    TaskType.TOKEN_CLS.value: PeftModelForTokenClassification,
    TaskType.QUESTION_ANS.value: PeftModelForQuestionAnswering,
    TaskType.FEATURE_EXTRACTION.value: PeftModelForFeatureExtraction,
}


def peft_class_for_task(task_type: TaskType | str | None) -> type[PeftModel]:
    if task_type is None:
        return PeftModel
    return MODEL_TYPE_TO_PEFT_MODEL_MAPPING[getattr(task_type, "value", task_type)]


def get_peft_model(
    model: nn.Module,
    peft_config: PeftConfig,
    adapter_name: str = "default",
    mixed: bool = False,
    autocast_adapter_dtype: bool = True,
    revision: str | None = None,
    low_cpu_mem_usage: bool = False,
    **kwargs: Any,
) -> PeftModel:
    """Wrap `model` with a new adapter described by `peft_config`; returns the task's PeftModel.

    Every argument and every target is validated before the model is modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(peft_config, PeftConfig):
        raise TypeError(
            f"peft_config must be a PeftConfig (e.g. LoraConfig(...)), got {type(peft_config).__name__}"
        )
    if mixed:
        raise ValueError("mixed=True (mixing adapter types) is not supported; use one method per model")
    validate_adapter_name(adapter_name)
    if _has_adapter_layers(model):
        raise ValueError(
            "model already contains adapter layers; use peft_model.add_adapter(...) to add another adapter"
        )
    if revision is not None and peft_config.revision is None:
        peft_config.revision = revision
    cls = peft_class_for_task(peft_config.task_type)
    return cls(model, peft_config, adapter_name, autocast_adapter_dtype, low_cpu_mem_usage)


def _has_adapter_layers(model: nn.Module) -> bool:
    from peftcore.modules_to_save import ModulesToSaveWrapper
    from peftcore.tuners.lora.layer import LoraLayer

    return any(isinstance(m, LoraLayer | ModulesToSaveWrapper) for m in model.modules())
