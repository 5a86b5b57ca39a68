"""Adapter configurations: the `PeftConfig` base, `PeftType`, `TaskType`, and `adapter_config.json` IO.

A config is a dataclass that round-trips through `adapter_config.json` exactly as Hugging Face PEFT
writes it (indent 2, sorted keys, sets as lists). Unknown keys from newer writers are ignored with a
warning, unless they would change the adapter's numerics, in which case loading fails loudly.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from peftcore.constants import CONFIG_NAME, PEFT_FORMAT_VERSION
from peftcore.io import atomic_write_text, download_kwargs, resolve_file

# The Hugging Face PEFT version whose file format peftcore writes; stored as `peft_version` so that
# readers which switch behaviour on that field (HF PEFT does for some methods) read our files right.
__version__ = PEFT_FORMAT_VERSION


class PeftType(str, enum.Enum):
    """The parameter-efficient method an adapter uses (the `peft_type` field)."""

    LORA = "LORA"
    PROMPT_TUNING = "PROMPT_TUNING"
    P_TUNING = "P_TUNING"
    PREFIX_TUNING = "PREFIX_TUNING"
    ADALORA = "ADALORA"
    IA3 = "IA3"
    LOHA = "LOHA"
    LOKR = "LOKR"


class TaskType(str, enum.Enum):
    """The model head an adapter is trained for (the `task_type` field)."""

    SEQ_CLS = "SEQ_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    CAUSAL_LM = "CAUSAL_LM"
    TOKEN_CLS = "TOKEN_CLS"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"


def _get_commit_hash(pkg_name: str) -> str | None:
    """The VCS commit a package was installed from (`pip install git+...@<hash>`), if recorded."""
    try:
        dist = importlib.metadata.distribution(pkg_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    commit = json.loads(text).get("vcs_info", {}).get("commit_id")
    return str(commit) if commit else None


def _peft_version() -> str:
    """`__version__`, plus `@<commit>` for a development version (`@UNKNOWN` when it cannot be told)."""
    version = __version__
    if "dev" not in version:
        return version
    try:
        commit = _get_commit_hash("peftcore") or "UNKNOWN"
    except Exception:  # never let version bookkeeping break building a config
        warnings.warn(
            "A dev version of PEFT is used but there was an error while trying to determine the commit hash; "
            "peft_version is recorded without it",
            stacklevel=3,
        )
        commit = "UNKNOWN"
    return f"{version}@{commit}"


def _registered_config(peft_type: str) -> type[PeftConfig] | None:
    from peftcore.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)


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
    NEUTRAL_FOREIGN_FIELDS: ClassVar[dict[str, Any]] = {}
    # Keys HF PEFT writes that only matter when one of the features above is on (e.g. a group size
    # with a non-None default): dropped silently whatever their value.
    INERT_FOREIGN_FIELDS: ClassVar[tuple[str, ...]] = ()

    task_type: TaskType | str | None = None
    peft_type: PeftType | str | None = field(default=None, init=True)
    # For a custom (non-transformers) base model: its class and module, recorded by HF PEFT so that
    # its AutoPeftModel can rebuild it. Informational: it does not change what the adapter computes.
    auto_mapping: dict[str, Any] | None = None
    base_model_name_or_path: str | None = None
    revision: str | None = None
    inference_mode: bool = False
    peft_version: str | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> PeftConfig:
        # Before the dataclass __init__: a field of another method gets a message that names that method.
        if kwargs:
            _check_known_fields(cls, kwargs)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        # The class decides the method; a peft_type passed in (as HF PEFT's loaders do) is overridden.
        self.peft_type = self.PEFT_TYPE
        if self.task_type is not None:
            try:
                self.task_type = TaskType(_enum_value(self.task_type))
            except ValueError:
                allowed = ", ".join(t.value for t in TaskType)
                raise ValueError(
                    f"Invalid task type: {self.task_type!r}. Must be one of the following task types: {allowed}. "
                    "Pass one of them (or None for a bare model) as task_type"
                ) from None
        if self.peft_version is None:
            self.peft_version = _peft_version()

    @property
    def is_prompt_learning(self) -> bool:
        """True for methods that learn virtual tokens instead of wrapping layers."""
        return False

    @property
    def is_adaption_prompt(self) -> bool:
        return False

    @classmethod
    def from_peft_type(cls, **kwargs: Any) -> PeftConfig:
        """Build the config class registered for `kwargs["peft_type"]` from the other keyword arguments."""
        peft_type = str(_enum_value(kwargs.pop("peft_type")))
        target = _registered_config(peft_type)
        if target is None:
            raise ValueError(f"peft_type={peft_type!r} is not supported by peftcore")
        return target(**kwargs)

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
        """Build the config class named by `data["peft_type"]` (or `cls`), ignoring unknown keys.

        Raises:
            TypeError: `data` has no `peft_type` (it is not an adapter config).
            ValueError: the type is unknown, or a key turns on a feature peftcore does not implement.
        """
        data = dict(data)
        if data.get("peft_type") is None:
            raise TypeError(
                f"The {cls.__name__} config that is trying to be loaded is missing required keys: {{'peft_type'}}. "
                'An adapter_config.json must name its method, e.g. "peft_type": "LORA"'
            )
        peft_type = str(_enum_value(data["peft_type"]))
        target = _registered_config(peft_type)
        if target is None:
            from peftcore.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

            known = ", ".join(sorted(PEFT_TYPE_TO_CONFIG_MAPPING))
            raise ValueError(f"peft_type={peft_type!r} is not supported by peftcore; supported: {known}")
        if cls is not PeftConfig and not issubclass(target, cls):
            raise ValueError(
                f"peft_type={peft_type!r} cannot be loaded as {cls.__name__}; load it with PeftConfig.from_pretrained"
            )
        known_fields = {f.name for f in dataclasses.fields(target) if f.init}
        ignored = []
        for key in sorted(set(data) - known_fields):
            value = data.pop(key)
            if key in target.INERT_FOREIGN_FIELDS:
                continue
            neutral = target.NEUTRAL_FOREIGN_FIELDS.get(key, _NO_NEUTRAL)
            if neutral is _NO_NEUTRAL:
                ignored.append(key)
            elif not _is_neutral(value, neutral):
                raise ValueError(
                    f"adapter config sets {key}={value!r}, a feature peftcore does not implement; "
                    f"loading it would give different outputs than the library that wrote it"
                )
        if ignored:
            warnings.warn(
                f"Unexpected keyword arguments {ignored} for class {target.__name__}, these are ignored. "
                "They were written by a newer or different library version.",
                stacklevel=3,
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
        data.pop("runtime_config", None)  # settings of one session, never part of the adapter
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
        """Load a config from a directory or a Hub repo id. `kwargs`: arguments of
        `huggingface_hub.hf_hub_download` (cache_dir, local_files_only, ...), the rest override loaded
        fields (an unknown field is a TypeError naming the configs that have it)."""
        overrides = dict(kwargs)
        download = download_kwargs(overrides)
        overrides.pop("use_auth_token", None)  # the old name of token, accepted and not used
        path = resolve_file(
            pretrained_model_name_or_path,
            CONFIG_NAME,
            subfolder=subfolder,
            revision=revision,
            token=token,
            **download,
        )
        data = cls.from_json_file(path)
        if overrides:  # the caller's own arguments: an unknown one is an error, not a newer file's field
            _check_known_fields(type(cls.from_dict(dict(data))), overrides)
        data.update(overrides)
        return cls.from_dict(data)


def _check_known_fields(cls: type, kwargs: dict[str, Any]) -> None:
    """Raise TypeError for keyword arguments that are not fields of `cls`, naming the configs that have them."""
    if not dataclasses.is_dataclass(cls):
        return
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(kwargs) - known)
    if not unknown:
        return
    from peftcore.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    notes = []
    for key in unknown:
        owners = sorted(
            other.__name__
            for other in set(PEFT_TYPE_TO_CONFIG_MAPPING.values())
            if other is not cls and key in {f.name for f in dataclasses.fields(other)}
        )
        where = f"a field of {', '.join(owners)}" if owners else "not a field of any peftcore config"
        notes.append(f"{key} ({where})")
    raise TypeError(
        f"{cls.__name__}.__init__() got an unexpected keyword argument {unknown[0]!r}: {cls.__name__} does not take "
        f"{'; '.join(notes)}. Remove it, or use the config class of the method it belongs to"
    )


# Download options HF PEFT's `from_pretrained` accepts beside config overrides; resolved by the Hub
# client's defaults here, never config fields.
_HUB_KWARGS = frozenset({"cache_dir", "force_download", "local_files_only", "proxies", "use_auth_token"})


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
