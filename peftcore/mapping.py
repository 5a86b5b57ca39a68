"""The one method registry, `get_peft_model` and `inject_adapter_in_model`.

Each method's package registers itself once with `register_peft_method` (its config class, its
model class and the prefix of its parameter names); everything else looks methods up here. The
`PEFT_TYPE_TO_*` dicts are views of that single registration, kept under HF PEFT's names.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from peftcore.config import PeftConfig, PeftType, TaskType

if TYPE_CHECKING:
    from peftcore.peft_model import PeftModel


@dataclass(frozen=True)
class PeftMethod:
    """One registered method: `peft_type` (e.g. "LORA"), its classes and its parameter-name prefix."""

    peft_type: str
    config_cls: type[PeftConfig]
    model_cls: type[nn.Module]
    prefix: str


PEFT_METHODS: dict[str, PeftMethod] = {}
PEFT_TYPE_TO_CONFIG_MAPPING: dict[str, type[PeftConfig]] = {}
PEFT_TYPE_TO_TUNER_MAPPING: dict[str, type[nn.Module]] = {}
PEFT_TYPE_TO_PREFIX_MAPPING: dict[str, str] = {}


def register_peft_method(
    *, name: str, config_cls: type[PeftConfig], model_cls: type[nn.Module], prefix: str | None = None
) -> None:
    """Register a method under `name` (lower case, e.g. "lora"; its peft_type is `name.upper()`).

    Raises:
        ValueError: `name` is not a known PeftType, or is registered already with other classes.
    """
    peft_type = name.upper()
    if peft_type not in PeftType.__members__:
        known = ", ".join(t.value.lower() for t in PeftType)
        raise ValueError(f"name={name!r} is not a PeftType; use one of {known}")
    method = PeftMethod(peft_type, config_cls, model_cls, prefix if prefix is not None else f"{name}_")
    existing = PEFT_METHODS.get(peft_type)
    if existing is not None and existing != method:
        raise ValueError(f"peft method {name!r} is already registered with {existing}; register it only once")
    PEFT_METHODS[peft_type] = method
    PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = config_cls
    PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = model_cls
    PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = method.prefix


def method_for(config: PeftConfig) -> PeftMethod:
    """The registered method of `config` (by its peft_type)."""
    peft_type = getattr(config.peft_type, "value", config.peft_type)
    try:
        return PEFT_METHODS[str(peft_type)]
    except KeyError:
        known = ", ".join(sorted(PEFT_METHODS))
        raise ValueError(
            f"peft_type={peft_type!r} has no implementation in peftcore; available: {known}"
        ) from None


def peft_class_for_task(task_type: TaskType | str | None) -> type[PeftModel]:
    """The `PeftModelFor<Task>` class of a task (PeftModel for None or an unknown task)."""
    from peftcore.peft_model import PeftModel
    from peftcore.task_models import MODEL_TYPE_TO_PEFT_MODEL_MAPPING

    if task_type is None:
        return PeftModel
    return MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(str(getattr(task_type, "value", task_type)), PeftModel)


def get_peft_model(
    model: nn.Module,
    peft_config: PeftConfig,
    adapter_name: str = "default",
    mixed: bool = False,
    autocast_adapter_dtype: bool = True,
    revision: str | None = None,
    low_cpu_mem_usage: bool = False,
) -> PeftModel:
    """Wrap `model` with a new adapter described by `peft_config`; returns the task's PeftModel.

    As in HF PEFT, the model keeps `peft_config` itself (resolved in place: default target modules,
    the base model's name) under `adapter_name`. Every target is validated before the model is
    modified.

    `peft_config.base_model_name_or_path` is kept as given (e.g. the Hub id of a model loaded from a
    local copy); when unset, `save_pretrained` fills it from the base model. (HF PEFT replaces it with
    the model's `name_or_path` here, with a warning.)

    Args:
        model: the base model.
        peft_config: the adapter's config, e.g. `LoraConfig(...)`.
        adapter_name: the name of the first adapter.
        mixed: mixing adapter types in one model; not supported by peftcore.
        autocast_adapter_dtype: keep adapter weights in float32 on a float16/bfloat16 base.
        revision: the base model's revision, recorded in the config.
        low_cpu_mem_usage: create the adapter weights on the meta device (to be loaded afterwards).

    Raises:
        TypeError: `model` is not an nn.Module or `peft_config` not a PeftConfig.
        ValueError: an invalid adapter name, `mixed=True`, or targets that match nothing.
    """
    from peftcore.persistence import validate_adapter_name

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(peft_config, PeftConfig):
        raise TypeError(
            f"peft_config must be a PeftConfig (a method's config class), got {type(peft_config).__name__}"
        )
    if mixed:
        raise ValueError("mixed=True (mixing adapter types in one model) is not supported; use mixed=False")
    validate_adapter_name(adapter_name)
    method_for(peft_config)
    _warn_if_already_adapted(model)
    if revision is not None:
        if peft_config.revision is not None and peft_config.revision != revision:
            warnings.warn(
                f"peft config has already set base model revision to {peft_config.revision}, overwriting with "
                f"revision {revision}",
                stacklevel=2,
            )
        peft_config.revision = revision
    cls = peft_class_for_task(peft_config.task_type)
    return cls(
        model,
        peft_config,
        adapter_name=adapter_name,
        autocast_adapter_dtype=autocast_adapter_dtype,
        low_cpu_mem_usage=low_cpu_mem_usage,
    )


def _warn_if_already_adapted(model: nn.Module) -> None:
    from peftcore.injection import is_wrapper

    if any(is_wrapper(m) for m in model.modules()):
        warnings.warn(
            "You are trying to modify a model with PEFT for a second time: it already contains adapter layers. "
            "To add another adapter use peft_model.add_adapter(...); to start over, call .unload() on the "
            "previous PeftModel first.",
            stacklevel=3,
        )


def inject_adapter_in_model(
    peft_config: PeftConfig,
    model: nn.Module,
    adapter_name: str = "default",
    low_cpu_mem_usage: bool = False,
    state_dict: dict[str, Any] | None = None,
) -> nn.Module:
    """Add an adapter to `model` in place, without a PeftModel around it; returns `model`.

    The model then carries `peft_config` as an attribute, so `get_peft_model_state_dict(model)` and
    `set_peft_model_state_dict(model, ...)` work on it directly.

    Args:
        peft_config: the adapter's config (an adapter-layer method; prompt learning needs a PeftModel).
        model: the module to adapt.
        adapter_name: the adapter's name.
        low_cpu_mem_usage: create the adapter weights on the meta device.
        state_dict: when given, the modules to adapt are those its keys name, not `target_modules`.

    Raises:
        ValueError: a prompt-learning config, or targets that match nothing.
    """
    from peftcore.persistence import validate_adapter_name

    validate_adapter_name(adapter_name)
    if peft_config.is_prompt_learning:
        raise ValueError(
            f"{peft_config.peft_type} is a prompt-learning method; it has no layers to inject. Use get_peft_model"
        )
    tuner_cls = method_for(peft_config).model_cls
    tuner = tuner_cls(
        model,
        peft_config,
        adapter_name=adapter_name,
        low_cpu_mem_usage=low_cpu_mem_usage,
        state_dict=state_dict,
    )
    return tuner.model  # type: ignore[return-value]
