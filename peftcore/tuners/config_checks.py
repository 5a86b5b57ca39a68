"""Validation of the config fields several methods share (targets, saved modules, layer selection,
per-module patterns, ranks and probabilities). Each check names the field, the value and the fix."""

from __future__ import annotations

import re
from typing import Any


def as_name_set(value: Any, name: str) -> set[str] | str | None:
    """A list of module names → a set (as HF PEFT stores it); a regex string or None unchanged."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise TypeError(f"{name} entries must be module-name strings, got {bad!r}")
        return set(value)
    raise TypeError(f"{name}={value!r} must be a list of module names, a regex string, or None")


def as_module_list(value: Any, name: str = "modules_to_save") -> list[str] | None:
    """`modules_to_save`-style fields: a list of module names (a bare string is a mistake)."""
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(f"{name}={value!r} must be a list of module names, e.g. [{value!r}]")
    return list(value)


def check_layer_selection(config: Any) -> None:
    """`layers_to_transform` / `layers_pattern` need list targets, and a pattern needs the indices."""
    targets = getattr(config, "target_modules", None)
    layers = getattr(config, "layers_to_transform", None)
    pattern = getattr(config, "layers_pattern", None)
    if isinstance(targets, str):
        if layers is not None:
            raise ValueError(
                "`layers_to_transform` cannot be used when `target_modules` is a str. Encode the layer indices "
                "in the regex instead"
            )
        if pattern is not None:
            raise ValueError(
                "`layers_pattern` cannot be used when `target_modules` is a str. Encode the layer names in the "
                "regex instead"
            )
    if pattern and layers is None:
        raise ValueError(
            "When `layers_pattern` is specified, `layers_to_transform` must also be specified: "
            f"layers_pattern={pattern!r} needs the indices to adapt"
        )


def check_positive_int(name: str, value: Any, example: str = "8") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer, e.g. {name}={example}")


def check_probability(name: str, value: Any) -> None:
    """A dropout probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value!r} must be a probability in [0, 1); use 0.0 to disable it")


def check_rank_pattern(patterns: dict[str, Any] | None, name: str = "rank_pattern") -> None:
    for key, value in (patterns or {}).items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}[{key!r}]={value!r} must be a positive integer")


def pattern_value(patterns: dict[str, Any] | None, module_name: str, default: Any) -> Any:
    """The value of the first key of `patterns` matching `module_name` (`(.*\\.)?KEY$`), else `default`."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default
