"""Adapter configurations: the `PeftConfig` base, `PeftType`, `TaskType`, and `adapter_config.json` IO.

A config is a dataclass that round-trips through `adapter_config.json` exactly as Hugging Face PEFT
writes it (indent 2, sorted keys, sets as lists). Unknown keys from newer writers are ignored with a
warning, unless they would change the adapter's numerics, in which case loading fails loudly.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from peftcore._version import __version__
from peftcore.constants import CONFIG_NAME
from peftcore.io import atomic_write_text, resolve_file

C = TypeVar("C", bound="PeftConfig")


class PeftType(str, enum.Enum):
    """The parameter-efficient method an adapter uses (the `peft_type` field)."""

    LORA = "LORA"
    PROMPT_TUNING = "PROMPT_TUNING"
    P_TUNING = "P_TUNING"
    PREFIX_TUNING = "PREFIX_TUNING"
    IA3 = "IA3"


class TaskType(str, enum.Enum):
    """The model head an adapter is trained for (the `task_type` field)."""

    SEQ_CLS = "SEQ_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    CAUSAL_LM = "CAUSAL_LM"
    TOKEN_CLS = "TOKEN_CLS"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"


# peft_type value -> config class; filled by each method's package at import time.
CONFIG_REGISTRY: dict[str, type[PeftConfig]] = {}


def register_config(cls: type[C]) -> type[C]:
    """Class decorator: make `PeftConfig.from_pretrained` dispatch to `cls` for its `PEFT_TYPE`."""
    CONFIG_REGISTRY[cls.PEFT_TYPE.value] = cls
    return cls


@dataclass
class PeftConfig:
    """Fields shared by every adapter config.

    Args:
        task_type: the task the base model is built for; selects the `PeftModelFor<Task>` class.
        base_model_name_or_path: the base model's Hub id or path; filled from the model at save time.
        revision: the base model's revision, honoured by `AutoPeftModel`.
        inference_mode: freeze the adapter (written `true` at save time, as HF PEFT does).
    """

    PEFT_TYPE: ClassVar[PeftType]
    # Keys HF PEFT writes for features peftcore does not implement, with the value that means "off".
    # Loading a file that sets one of them to anything else fails instead of silently diverging.
    NEUTRAL_FOREIGN_FIELDS: ClassVar[dict[str, Any]] = {"auto_mapping": None}
    # Keys HF PEFT writes that only matter when one of the features above is on (e.g. a group size
    # with a non-None default): dropped silently whatever their value.
    INERT_FOREIGN_FIELDS: ClassVar[tuple[str, ...]] = ()

    task_type: TaskType | str | None = None
    peft_type: PeftType | str | None = field(default=None, init=True)
    base_model_name_or_path: str | None = None
    revision: str | None = None
    inference_mode: bool = False
    peft_version: str | None = None

    def __post_init__(self) -> None:
        if self.peft_type is not None and str(_enum_value(self.peft_type)) != self.PEFT_TYPE.value:
            raise ValueError(
                f"peft_type={_enum_value(self.peft_type)!r} does not match {type(self).__name__}; "
                f"use the config class registered for that type or drop the peft_type argument"
            )
        self.peft_type = self.PEFT_TYPE
        if self.task_type is not None:
            try:
                self.task_type = TaskType(_enum_value(self.task_type))
            except ValueError:
                allowed = ", ".join(t.value for t in TaskType)
                raise ValueError(
                    f"task_type={self.task_type!r} is not a known task; use one of {allowed} or None"
                ) from None
        if self.peft_version is None:
            self.peft_version = f"peftcore-{__version__}"

    @property
    def is_prompt_learning(self) -> bool:
        """True for methods that learn virtual tokens instead of wrapping layers."""
        return False

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict: enums as strings, sets as sorted lists."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> None:
        """Write `adapter_config.json` into `save_directory` atomically."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory={str(save_directory)!r} is a file; pass a directory")
        os.makedirs(save_directory, exist_ok=True)
        atomic_write_text(os.path.join(save_directory, CONFIG_NAME), self.to_json_string())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeftConfig:
        """Build the config class named by `data["peft_type"]` (or `cls`), ignoring unknown keys."""
        data = dict(data)
        target = cls
        if "peft_type" not in data or data["peft_type"] is None:
            if cls is PeftConfig:
                raise ValueError(
                    "the adapter config has no 'peft_type'; it must name the method, e.g. \"LORA\""
                )
        else:
            peft_type = str(_enum_value(data["peft_type"]))
            if peft_type not in CONFIG_REGISTRY:
                known = ", ".join(sorted(CONFIG_REGISTRY))
                raise ValueError(f"peft_type={peft_type!r} is not supported by peftcore; supported: {known}")
            target = CONFIG_REGISTRY[peft_type]
            if cls is not PeftConfig and not issubclass(target, cls):
                raise ValueError(f"peft_type={peft_type!r} cannot be loaded as {cls.__name__}")
        known_fields = {f.name for f in dataclasses.fields(target) if f.init}
        unknown = sorted(set(data) - known_fields)
        ignored = []
        for key in unknown:
            value = data.pop(key)
            if key in target.INERT_FOREIGN_FIELDS:
                continue
            neutral = target.NEUTRAL_FOREIGN_FIELDS.get(key, _NO_NEUTRAL)
            if neutral is _NO_NEUTRAL or _is_neutral(value, neutral):
                if neutral is _NO_NEUTRAL:
                    ignored.append(key)
                continue
            raise ValueError(
                f"adapter config sets {key}={value!r}, a feature peftcore does not implement; "
                f"loading it would give different outputs than the library that wrote it"
            )
        if ignored:
            warnings.warn(
                f"ignoring unknown adapter config keys {ignored} (written by a newer or different library)",
                stacklevel=2,
            )
        return target(**data)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read an `adapter_config.json` as a plain dict, with a clear error for broken files."""
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); re-save the adapter") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
        return data

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        subfolder: str | None = None,
        revision: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> PeftConfig:
        """Load a config from a directory or a Hub repo id; `kwargs` override loaded fields."""
        path = resolve_file(
            pretrained_model_name_or_path, CONFIG_NAME, subfolder=subfolder, revision=revision, token=token
        )
        data = cls.from_json_file(path)
        data.update(kwargs)
        return cls.from_dict(data)


_NO_NEUTRAL = object()


def _is_neutral(value: Any, neutral: Any) -> bool:
    if value == neutral:
        return True
    # Empty containers and None all mean "feature off".
    return neutral in (None, False, {}, []) and value in (None, False, {}, [])


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
