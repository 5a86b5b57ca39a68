"""The adapter-layer methods under test beside LoRA, and how each is configured on the tiny models.

Shared by the contract tests (`test_method_contracts.py`) and the differential tests against HF PEFT
(`test_method_differential.py`). Each spec says, per tiny architecture, the config keyword arguments
(the same for both libraries), which architectures the method can adapt, and the on-disk key suffixes
of its tensors (FORMAT.md / HF PEFT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tests import tiny

# Linear targets in every tiny architecture that LoHa / LoKr can adapt (GPT-2 has Conv1D layers only).
LINEAR_TARGETS = {
    "llama": ["q_proj", "v_proj", "down_proj"],
    "opt": ["q_proj", "v_proj", "fc1"],
    "t5": ["q", "v", "wi"],
    "bert": ["query", "value", "intermediate.dense"],
}


@dataclass(frozen=True)
class MethodSpec:
    """One method: its config class name (the same in both libraries) and its settings per architecture."""

    name: str
    config_name: str
    kwargs: Callable[[str], dict[str, Any]]
    # kwargs that make the adapter non-trivial at init (so nothing passes by being the identity)
    random_init: dict[str, Any]
    key_suffixes: tuple[str, ...]
    archs: tuple[str, ...] = tiny.ARCHS
    merges: bool = True

    def config(self, lib: Any, arch: str, **overrides: Any) -> Any:
        kw = {"task_type": tiny.TASK[arch], **self.kwargs(arch), **overrides}
        return getattr(lib, self.config_name)(**kw)


METHODS: dict[str, MethodSpec] = {
    "ia3": MethodSpec(
        name="ia3",
        config_name="IA3Config",
        kwargs=lambda arch: {},  # the architecture's default targets and feed-forward modules
        random_init={"init_ia3_weights": False},
        key_suffixes=("ia3_l",),
    ),
    "loha": MethodSpec(
        name="loha",
        config_name="LoHaConfig",
        kwargs=lambda arch: {"target_modules": LINEAR_TARGETS[arch], "r": 4, "alpha": 6},
        random_init={"init_weights": False},
        key_suffixes=("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
        archs=tuple(LINEAR_TARGETS),
    ),
    "lokr": MethodSpec(
        name="lokr",
        config_name="LoKrConfig",
        # r=2 with decompose_both: every factor form appears (whole W1 / W2 and rank-r products).
        kwargs=lambda arch: {
            "target_modules": LINEAR_TARGETS[arch],
            "r": 2,
            "alpha": 3,
            "decompose_both": True,
        },
        random_init={"init_weights": False},
        key_suffixes=("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"),
        archs=tuple(LINEAR_TARGETS),
    ),
}


def perturb(model: nn.Module, seed: int, scale: float = 0.1) -> None:
    """Move every trainable tensor away from its current value (adapters, saved heads)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def build(lib: Any, spec: MethodSpec, arch: str, seed: int = 0, **overrides: Any) -> Any:
    """A fresh tiny `arch` with `spec`'s adapter from `lib` (peftcore or HF peft)."""
    return lib.get_peft_model(tiny.build(arch, seed=seed), spec.config(lib, arch, **overrides))
