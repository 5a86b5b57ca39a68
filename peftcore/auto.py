"""`AutoPeftModel*`: read an adapter's config, load the base model it names, attach the adapter."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from peftcore.config import PeftConfig, TaskType
from peftcore.constants import TASK_HEAD_MODULES
from peftcore.mapping import peft_class_for_task
from peftcore.peft_model import PeftModel
from peftcore.serialization import load_peft_weights


class _BaseAutoPeftModel:
    """Subclasses name the transformers auto class and the task they expect."""

    _target_class: ClassVar[str | None] = None
    _task_type: ClassVar[TaskType | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise OSError(f"{type(self).__name__} is built with {type(self).__name__}.from_pretrained(...)")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        adapter_name: str = "default",
        is_trainable: bool = False,
        config: PeftConfig | None = None,
        revision: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> PeftModel:
        """Load base model + adapter. `revision` is the ADAPTER's revision; the base model's comes from
        the adapter config. Other `kwargs` (e.g. `dtype`, `num_labels`) go to the base model."""
        peft_config = config or PeftConfig.from_pretrained(
            pretrained_model_name_or_path, revision=revision, token=token
        )
        base_path = peft_config.base_model_name_or_path
        if not base_path:
            raise ValueError(
                f"the adapter at {os.fspath(pretrained_model_name_or_path)!r} does not name its base model "
                "(base_model_name_or_path is empty); load the base model yourself and use PeftModel.from_pretrained"
            )
        task = peft_config.task_type
        if cls._task_type is not None and task is not None and TaskType(task) != cls._task_type:
            raise ValueError(
                f"{cls.__name__} expects a {cls._task_type.value} adapter, but this adapter's task_type is "
                f"{TaskType(task).value}; use {_auto_name_for(task)} instead"
            )
        auto_cls = _base_class(cls._target_class, task, peft_config, base_path, token)
        weights = None
        if task is not None and TaskType(task).value in TASK_HEAD_MODULES and "num_labels" not in kwargs:
            # The trained head's row count is the label count; read it so the base model is built to fit.
            weights = load_peft_weights(pretrained_model_name_or_path, revision=revision, token=token)
            num_labels = _head_rows(weights, TASK_HEAD_MODULES[TaskType(task).value])
            if num_labels is not None:
                kwargs["num_labels"] = num_labels
        elif task is None and hasattr(auto_cls, "config_class") and "num_labels" not in kwargs:
            # Image classifiers and segmentation models (no task_type, as in HF PEFT's guides) save
            # their new head (`classifier`, SegFormer's `decode_head.classifier`) in modules_to_save.
            weights = load_peft_weights(pretrained_model_name_or_path, revision=revision, token=token)
            num_labels = _head_rows(weights, ("classifier",))
            if num_labels is not None:
                kwargs["num_labels"] = num_labels
                kwargs.setdefault("ignore_mismatched_sizes", True)
        base = auto_cls.from_pretrained(base_path, revision=peft_config.revision, token=token, **kwargs)
        peft_cls = peft_class_for_task(task)
        return peft_cls.from_pretrained(
            base,
            pretrained_model_name_or_path,
            adapter_name=adapter_name,
            is_trainable=is_trainable,
            config=peft_config,
            revision=revision,
            token=token,
        )


# Packages whose classes an adapter's `auto_mapping` may name (importing a module runs its code).
_IMPORT_ALLOWLIST = ("transformers", "diffusers")


def _base_class(
    target: str | None, task: Any, peft_config: PeftConfig, base_path: str, token: str | None
) -> Any:
    """The class that loads the base model: the Auto class of the adapter's task; for an adapter
    without a task, the class its `auto_mapping` names (written by both libraries on save), else the
    `architectures` entry of the base model's config. A seq2seq adapter on a speech model (Whisper)
    loads with AutoModelForSpeechSeq2Seq, since AutoModelForSeq2SeqLM knows text models only."""
    import importlib

    import transformers

    value = getattr(task, "value", task)
    if target is None and value is None:
        mapping = peft_config.auto_mapping or {}
        module, name = mapping.get("parent_library"), mapping.get("base_model_class")
        if module and name:
            if module.split(".")[0] not in _IMPORT_ALLOWLIST:
                raise ValueError(
                    f"the adapter's auto_mapping names {module}.{name}; only classes from "
                    f"{', '.join(_IMPORT_ALLOWLIST)} are imported. Load the base model yourself and use "
                    "PeftModel.from_pretrained"
                )
            return getattr(importlib.import_module(module), name)
        architectures = getattr(_base_config(base_path, peft_config, token), "architectures", None) or []
        if architectures and hasattr(transformers, architectures[0]):
            return getattr(transformers, architectures[0])
        return transformers.AutoModel
    auto_name = target or _TASK_TO_AUTO.get(value or "", "AutoModel")
    if auto_name == "AutoModelForSeq2SeqLM":
        from transformers.models.auto.modeling_auto import MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

        model_type = getattr(_base_config(base_path, peft_config, token), "model_type", None)
        if model_type in MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES:
            auto_name = "AutoModelForSpeechSeq2Seq"
    return getattr(transformers, auto_name)


def _base_config(base_path: str, peft_config: PeftConfig, token: str | None) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base_path, revision=peft_config.revision, token=token)


def _head_rows(weights: dict[str, Any], heads: tuple[str, ...]) -> int | None:
    for key, tensor in weights.items():
        for head in heads:
            if key.endswith(f".{head}.weight") or key.endswith(f".{head}.out_proj.weight"):
                return int(tensor.shape[0])
    return None


_TASK_TO_AUTO = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "FEATURE_EXTRACTION": "AutoModel",
}


def _auto_name_for(task: Any) -> str:
    return {
        "CAUSAL_LM": "AutoPeftModelForCausalLM",
        "SEQ_2_SEQ_LM": "AutoPeftModelForSeq2SeqLM",
        "SEQ_CLS": "AutoPeftModelForSequenceClassification",
        "TOKEN_CLS": "AutoPeftModelForTokenClassification",
        "QUESTION_ANS": "AutoPeftModelForQuestionAnswering",
        "FEATURE_EXTRACTION": "AutoPeftModelForFeatureExtraction",
    }.get(getattr(task, "value", task), "AutoPeftModel")


class AutoPeftModel(_BaseAutoPeftModel):
    """Any task: the base class follows the adapter's task_type (AutoModel when it has none)."""


class AutoPeftModelForCausalLM(_BaseAutoPeftModel):
    _target_class = "AutoModelForCausalLM"
    _task_type = TaskType.CAUSAL_LM


class AutoPeftModelForSeq2SeqLM(_BaseAutoPeftModel):
    _target_class = "AutoModelForSeq2SeqLM"
    _task_type = TaskType.SEQ_2_SEQ_LM


class AutoPeftModelForSequenceClassification(_BaseAutoPeftModel):
    _target_class = "AutoModelForSequenceClassification"
    _task_type = TaskType.SEQ_CLS


class AutoPeftModelForTokenClassification(_BaseAutoPeftModel):
    _target_class = "AutoModelForTokenClassification"
    _task_type = TaskType.TOKEN_CLS


class AutoPeftModelForQuestionAnswering(_BaseAutoPeftModel):
    _target_class = "AutoModelForQuestionAnswering"
    _task_type = TaskType.QUESTION_ANS


class AutoPeftModelForFeatureExtraction(_BaseAutoPeftModel):
    _target_class = "AutoModel"
    _task_type = TaskType.FEATURE_EXTRACTION
