"""Which modules an adapter targets, and replacing modules in place.

Matching rules (identical to HF PEFT):
- `target_modules` as a list: a module matches when its full name equals an entry or ends with
  `"." + entry`.
- as a string: a regex that must `re.fullmatch` the full module name.
- `"all-linear"`: every Linear / Conv1D except the output layer (and the classification head).
- unset: the per-architecture default table (`constants.py`).
- `layers_to_transform` keeps only modules inside the listed layer indices.
- `exclude_modules` removes matches (same list / regex rules).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from peftcore.constants import TASK_HEAD_MODULES
from peftcore.modules_to_save import ModulesToSaveWrapper

ALL_LINEAR = "all-linear"


def name_matches(name: str, patterns: str | Iterable[str] | None) -> bool:
    """True when `name` matches a list entry (exact or dotted suffix) or a full-match regex."""
    if patterns is None:
        return False
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def logical_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """`named_modules()` minus the insides of adapter wrappers (their base layers, A/B, copies).

    A wrapped layer is reported under its original name, so adding a second adapter targets the
    same names as the first.
    """
    from peftcore.tuners.lora.layer import LoraLayer

    skip: str | None = None
    for name, module in model.named_modules():
        if skip is not None and name.startswith(skip):
            continue
        skip = None
        yield name, module
        if isinstance(module, LoraLayer | ModulesToSaveWrapper):
            skip = name + "."


def layer_index(name: str, layers_pattern: str | list[str] | None) -> int | None:
    """The index of the layer a module sits in (`...layers.3.self_attn...` → 3), or None.

    The FIRST numbered segment counts (lazy match), so nested indices — T5's
    `block.1.layer.0.SelfAttention`, MoE experts — do not stand in for the layer index.
    """
    patterns: Sequence[str | None] = (
        [layers_pattern] if isinstance(layers_pattern, str) else (layers_pattern or [None])
    )
    for pattern in patterns:
        if pattern is None:
            m = re.match(r".*?\.[^.]*\.(\d+)\.", name)
        else:
            m = re.match(rf"(?:^|.*?\.){pattern}\.(\d+)\.", name)  # a regex, as in HF PEFT
        if m:
            return int(m.group(1))
    return None


def expand_all_linear(model: nn.Module, task_type: Any) -> set[str]:
    """The suffix names of every Linear/Conv1D except the output layer and the task head."""
    excluded: set[str] = set()
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    names: set[str] = set()
    for name, module in logical_modules(model):
        inner = getattr(module, "base_layer", module)
        if module is out or inner is out:
            excluded.add(name.rsplit(".", 1)[-1])
            continue
        if isinstance(inner, nn.Linear | Conv1D):
            names.add(name.rsplit(".", 1)[-1])
    task = getattr(task_type, "value", task_type)
    excluded.update(TASK_HEAD_MODULES.get(str(task), ()))
    return names - excluded


def find_target_names(
    model: nn.Module,
    target_modules: str | set[str],
    exclude_modules: str | Collection[str] | None = None,
    layers_to_transform: int | list[int] | None = None,
    layers_pattern: str | list[str] | None = None,
    protected: Iterable[str] = (),
) -> list[str]:
    """Full names of the modules to adapt. Raises a ValueError listing real names when none match."""
    layers = [layers_to_transform] if isinstance(layers_to_transform, int) else layers_to_transform
    if layers is not None and len(layers) == 0:
        layers = None  # an empty list means every layer (as in HF PEFT)
    protected = list(protected)
    found: list[str] = []
    for name, module in logical_modules(model):
        if not name or not name_matches(name, target_modules):
            continue
        if isinstance(module, ModulesToSaveWrapper) or name_matches(name, protected):
            # Trained in full and saved whole already; HF PEFT skips it too, so its files load here.
            warnings.warn(
                f"module {name!r} matches target_modules but is in modules_to_save; it is trained in full "
                "and not adapted",
                stacklevel=4,
            )
            continue
        if any(re.search(rf"(^|\.){re.escape(p)}\.", name) for p in protected):
            continue  # inside a module trained in full: it is saved whole, not adapted
        if layers is not None and layer_index(name, layers_pattern) not in layers:
            continue
        if exclude_modules is not None and name_matches(name, exclude_modules):
            continue
        found.append(name)
    if not found:
        raise ValueError(
            f"target_modules={_show(target_modules)} matched no module of {type(model).__name__}"
            f"{_filters(exclude_modules, layers_to_transform)}. Some of its module names: "
            f"{', '.join(sample_module_names(model))}"
        )
    return found


def sample_module_names(model: nn.Module, limit: int = 8) -> list[str]:
    """A few distinct adaptable leaf names (Linear, Conv1D, Embedding, Conv2d) for error messages."""
    seen: list[str] = []
    for name, module in logical_modules(model):
        if isinstance(module, nn.Linear | Conv1D | nn.Embedding | nn.Conv2d):
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


def wrap_modules_to_save(model: nn.Module, names: Iterable[str], adapter_name: str) -> list[str]:
    """Wrap (or extend) every module matching `names` in a ModulesToSaveWrapper."""
    names = list(names)
    wrapped = []
    for name, module in list(logical_modules(model)):
        if not name or not name_matches(name, names):
            continue
        if isinstance(module, ModulesToSaveWrapper):
            module.add(adapter_name)
        else:
            replace_module(model, name, ModulesToSaveWrapper(module, adapter_name))
        wrapped.append(name)
    return wrapped


def _show(targets: str | set[str]) -> str:
    return repr(targets) if isinstance(targets, str) else repr(sorted(targets))


def _filters(exclude: Any, layers: Any) -> str:
    parts = []
    if exclude:
        parts.append(f"exclude_modules={_show(exclude)}")
    if layers is not None:
        parts.append(f"layers_to_transform={layers!r}")
    return f" (after {', '.join(parts)})" if parts else ""
