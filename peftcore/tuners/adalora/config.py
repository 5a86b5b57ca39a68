"""`AdaLoraConfig`: HF PEFT's AdaLoRA fields and defaults (LoRA's fields plus the rank schedule)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from peftcore.config import PeftType
from peftcore.tuners.lora.config import LoraConfig


@dataclass
class AdaLoraConfig(LoraConfig):
    """AdaLoRA: LoRA in SVD form whose rank budget shrinks during training to the most useful triplets.

    Args:
        init_r: every targeted layer's rank at the start (`r` is not used).
        target_r: the average rank per layer at the end of the schedule.
        total_step: the number of optimizer steps of the training run (required; the schedule needs it).
        tinit: steps at full budget before pruning starts (warm-up).
        tfinal: steps at the final budget at the end (the mask is frozen then).
        deltaT: prune every `deltaT` steps during the budget phase.
        beta1, beta2: the smoothing of the sensitivity and of its uncertainty (exponential moving averages).
        orth_reg_weight: the weight of the orthogonality penalty on A and B added to the training loss.
        rank_pattern: written by the schedule: per layer (`<module>.lora_E`), which of the `init_r`
            triplets are kept; a saved adapter is stored and loaded at those ranks.
    """

    PEFT_TYPE: ClassVar[PeftType] = PeftType.ADALORA

    target_r: int = 8
    init_r: int = 12
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    total_step: int | None = None
    rank_pattern: Any = None
    # A LoRA field HF PEFT's AdaLoraConfig inherits and refuses: accepted empty, for its files.
    loftq_config: dict[str, Any] = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        # HF PEFT spells "biases of the adapted layers" `<method>_only`; for AdaLoRA's layers that is
        # LoRA's "lora_only" (they share the prefix `lora_`).
        if name == "bias" and value == "adalora_only":
            value = "lora_only"
        super().__setattr__(name, value)

    def __post_init__(self) -> None:
        if self.loftq_config:
            raise ValueError("ADALORA does not support LOFTQ: leave loftq_config empty")
        schedule, self.rank_pattern = self.rank_pattern, {}  # LoRA's check expects integer ranks
        super().__post_init__()
        self.rank_pattern = schedule
        if self.use_dora:
            raise ValueError(
                "ADALORA does not support DoRA: set use_dora=False (AdaLoRA has its own SVD form)"
            )
        for name in ("init_r", "target_r", "deltaT"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.total_step is None or isinstance(self.total_step, bool) or self.total_step <= 0:
            raise ValueError(
                "AdaLoRA does not work when `total_step` is None, supply a value > 0. "
                f"(total_step={self.total_step!r}: pass the number of optimizer steps of the run, e.g. "
                "total_step=len(dataloader) * epochs)"
            )
        if self.orth_reg_weight < 0:
            raise ValueError(
                f"`orth_reg_weight` should be greater than or equal to 0, but the value passed is {self.orth_reg_weight}"
            )
        for name in ("beta1", "beta2"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be in (0, 1), e.g. {name}=0.85")
        if self.tinit >= self.total_step - self.tfinal:
            raise ValueError(
                "The supplied schedule values don't allow for a budgeting phase. Decrease `tfinal`/`tinit` or "
                f"increase `total_step` (tinit={self.tinit}, tfinal={self.tfinal}, total_step={self.total_step})"
            )
        if self.rank_pattern is not None and not isinstance(self.rank_pattern, dict):
            raise ValueError(
                f"rank_pattern={self.rank_pattern!r} must be a dict of module name -> kept triplets"
            )
        if self.r != 8:
            warnings.warn(
                "Note that `r` is not used in AdaLora and will be ignored."
                "If you intended to set the initial rank, use `init_r` instead.",
                UserWarning,
                stacklevel=3,
            )
