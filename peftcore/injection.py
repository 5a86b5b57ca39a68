"""Which modules an adapter targets, and replacing modules in place. No method is named here.

Matching rules (identical to HF PEFT):
- `target_modules` as a list: a module matches when its full name equals an entry or ends with
  `"." + entry`.
- as a string: a regex that must `re.fullmatch` the full module name.
- `"all-linear"`: every Linear / Conv1D except the output layer (and the task head).
- unset: the method's per-architecture default table.
- `layers_to_transform` keeps only modules inside the listed layer indices (list targets only).
- `exclude_modules` removes matches (same list / regex rules), and so does being, or sitting inside,
  a module of `modules_to_save` (it is trained in full, not adapted).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.constants import TASK_HEAD_MODULES
from peftcore.tuners.base_layer import BaseTunerLayer

ALL_LINEAR = "all-linear"


class Match(enum.Enum):
    """Outcome of matching one module name against a config."""

    TARGET = "target"
    EXCLUDED = "excluded"
    NONE = "none"


def name_matches(name: str, patterns: str | Iterable[str] | None) -> bool:
    """True when `name` matches a list entry (exact or dotted suffix) or a full-match regex."""
    if patterns is None:
        return False
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def inside_any(name: str, module_names: Iterable[str]) -> bool:
    """True when `name` is one of `module_names` (dotted suffix) or sits inside one of them."""
    return any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", name) for m in module_names)


def layer_index(name: str, layers_pattern: str | Sequence[str] | None) -> int | None:
    """The index of the layer a module sits in (`...layers.3.self_attn...` → 3), or None.

    The FIRST numbered segment counts (lazy match), so nested indices — T5's
    `block.1.layer.0.SelfAttention`, MoE experts — do not stand in for the layer index.
    """
    patterns: Sequence[str | None] = (
        [layers_pattern] if isinstance(layers_pattern, str) else (list(layers_pattern or []) or [None])
    )
    for pattern in patterns:
        if pattern is None:
            m = re.match(r".*?\.[^.]*\.(\d+)\.", name)
        else:
            m = re.match(rf"(?:^|.*?\.){pattern}\.(\d+)\.", name)  # a regex, as in HF PEFT
        if m:
            return int(m.group(1))
    return None


def match_module(
    name: str,
    targets: str | Iterable[str] | None,
    exclude_modules: str | Iterable[str] | None = None,
    saved_modules: Iterable[str] = (),
    layers_to_transform: int | Sequence[int] | None = None,
    layers_pattern: str | Sequence[str] | None = None,
) -> Match:
    """Classify one module name: adapted, excluded (by `exclude_modules` / `modules_to_save`), or neither."""
    if exclude_modules and name_matches(name, exclude_modules):
        return Match.EXCLUDED
    if inside_any(name, saved_modules):
        return Match.EXCLUDED
    if targets is None or not name_matches(name, targets):
        return Match.NONE
    layers = layers_to_transform
    if isinstance(targets, str) or layers is None or (not isinstance(layers, int) and len(layers) == 0):
        return Match.TARGET
    index = layer_index(name, layers_pattern)
    wanted = [layers] if isinstance(layers, int) else list(layers)
    return Match.TARGET if index is not None and index in wanted else Match.NONE


def is_wrapper(module: nn.Module) -> bool:
    """Adapter layers and auxiliary wrappers: their insides are never targets themselves."""
    return isinstance(module, BaseTunerLayer | AuxiliaryTrainingWrapper)


def logical_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """`named_modules()` minus the insides of adapter layers and wrappers (base layers, A/B, copies).

    A wrapped layer is reported under its original name, so adding a second adapter targets the
    same names as the first.
    """
    skip: str | None = None
    for name, module in model.named_modules():
        if skip is not None and name.startswith(skip):
            continue
        skip = None
        yield name, module
        if is_wrapper(module):
            skip = name + "."


def expand_all_linear(model: nn.Module, task_type: Any) -> set[str]:
    """The suffix names of every Linear/Conv1D except the output layer and the task head."""
    excluded: set[str] = set()
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    names: set[str] = set()
    for name, module in logical_modules(model):
        inner = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        if out is not None and (module is out or inner is out):
            excluded.add(name.rsplit(".", 1)[-1])
            continue
        if isinstance(inner, nn.Linear | Conv1D):
            names.add(name.rsplit(".", 1)[-1])
    task = getattr(task_type, "value", task_type)
    excluded.update(TASK_HEAD_MODULES.get(str(task), ()))
    return names - excluded


def sample_module_names(model: nn.Module, limit: int = 8) -> list[str]:
    """A few distinct leaf names of layers with weights, for error messages."""
    seen: list[str] = []
    for name, module in logical_modules(model):
        if name and hasattr(module, "weight") and not list(module.children()):
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in seen:
                seen.append(leaf)
        if len(seen) >= limit:
            break
    return seen


def get_submodule_parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, child = get_submodule_parent(model, name)
    setattr(parent, child, new)


def show_targets(targets: Any) -> str:
    """A stable rendering of a target spec for messages (sets sorted)."""
    if isinstance(targets, set | frozenset):
        return repr(sorted(targets))
    return repr(targets)


def model_type_of(model: nn.Module) -> str | None:
    """`model.config.model_type` (through `to_dict()` when the config has it), or None."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    to_dict = getattr(config, "to_dict", None)
    data = to_dict() if callable(to_dict) else {}
    model_type = data.get("model_type") if isinstance(data, dict) else None
    return model_type if model_type is not None else getattr(config, "model_type", None)


def resolve_target_modules(config: Any, model: nn.Module, defaults: dict[str, Any], method_name: str) -> Any:
    """Set `config.target_modules` None → the architecture's default (`defaults[model_type]`) and
    "all-linear" → the explicit names, in place; returns `config`.

    Raises:
        ValueError: no targets given and none known for this architecture (names real modules).
    """
    if not hasattr(config, "target_modules"):
        return config
    targets = config.target_modules
    if targets is None and not getattr(config, "target_parameters", None):
        model_type = model_type_of(model)
        if model_type not in defaults:
            raise ValueError(
                f"Please specify `target_modules` in `peft_config`: target_modules is not set and "
                f"model_type={model_type!r} has no default {method_name} targets; pass target_modules=[...] "
                f"(e.g. {sample_module_names(model, 6)}) or 'all-linear'"
            )
        default = defaults[model_type]
        config.target_modules = default if isinstance(default, str) else set(default)
    elif targets == ALL_LINEAR:
        config.target_modules = expand_all_linear(model, config.task_type)
    return config


def saved_module_names(config: Any) -> list[str]:
    """`config.modules_to_save` plus the task's head (classifier, score, qa_outputs)."""
    names = list(getattr(config, "modules_to_save", None) or [])
    task = getattr(config.task_type, "value", config.task_type)
    for head in TASK_HEAD_MODULES.get(str(task), ()):
        if head not in names:
            names.append(head)
    return names
