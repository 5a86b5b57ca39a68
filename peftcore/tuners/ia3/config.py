"""`IA3Config`: the fields HF PEFT's (IA)³ writes, with its defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from peftcore.config import PeftConfig, PeftType
from peftcore.tuners.config_checks import as_module_list, as_name_set


@dataclass
class IA3Config(PeftConfig):
    """(IA)³: learned vectors that rescale activations, `y = l ⊙ (W x + b)` or `y = W (l ⊙ x) + b`.

    Args:
        target_modules: module names (exact or dotted suffix), a regex matching full names, or
            "all-linear". Unset: the default for the model's architecture.
        exclude_modules: names or a regex to leave out of `target_modules`.
        feedforward_modules: the targets whose INPUT is scaled (the feed-forward layers of the paper);
            the other targets have their output scaled. Names (a module matches when its name ends with
            one) or a regex; must be a subset of `target_modules`. Unset: the architecture's default.
        fan_in_fan_out: the base weight is stored (in, out), as GPT-2's Conv1D does (set automatically).
        modules_to_save: extra modules trained in full and saved (e.g. a new head).
        init_ia3_weights: start every vector at 1 (the identity); False leaves them random.
    """

    PEFT_TYPE: ClassVar[PeftType] = PeftType.IA3

    target_modules: list[str] | set[str] | str | None = None
    exclude_modules: list[str] | set[str] | str | None = None
    feedforward_modules: list[str] | set[str] | str | None = None
    fan_in_fan_out: bool = False
    modules_to_save: list[str] | None = None
    init_ia3_weights: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.target_modules = as_name_set(self.target_modules, "target_modules")
        self.exclude_modules = as_name_set(self.exclude_modules, "exclude_modules")
        self.feedforward_modules = as_name_set(self.feedforward_modules, "feedforward_modules")
        self.modules_to_save = as_module_list(self.modules_to_save)
        ff, targets = self.feedforward_modules, self.target_modules
        if isinstance(ff, set) and isinstance(targets, set) and not ff.issubset(targets):
            raise ValueError(
                "`feedforward_modules` should be a subset of `target_modules`: "
                f"{sorted(ff - targets)} are feed-forward modules but not targets; add them to target_modules "
                "or remove them from feedforward_modules"
            )

    def is_feedforward(self, module_name: str) -> bool:
        """Does `module_name` get its input scaled? (regex: full match; names: the name ends with one)."""
        ff = self.feedforward_modules
        if ff is None:
            return False
        if isinstance(ff, str):
            return re.fullmatch(ff, module_name) is not None
        return any(module_name.endswith(name) for name in ff)
