"""`LoKrConfig`: HF PEFT's LoKr fields and defaults (the shared ones are in `tuners/lycoris.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftcore.config import PeftType
from peftcore.tuners.lycoris import LycorisConfig


@dataclass
class LoKrConfig(LycorisConfig):
    """LoKr: ΔW is a Kronecker product of two factors (see `layer.py`).

    Args:
        decompose_both: also factor the left Kronecker factor as a rank-r product (when r is small
            enough for that to save parameters).
        decompose_factor: split each dimension into factors near this number (-1: near its square root).
        rank_dropout_scale: divide the rows kept by `rank_dropout` by the fraction kept.
        init_weights: True (ΔW starts at 0 through the left factor), "lycoris" (through the right
            factor, as the LyCORIS library does) or False (random).
    """

    PEFT_TYPE: ClassVar[PeftType] = PeftType.LOKR

    decompose_both: bool = False
    decompose_factor: int = -1
    rank_dropout_scale: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_weights not in (True, False, "lycoris"):
            raise ValueError(
                f"init_weights={self.init_weights!r} must be True, False or 'lycoris'; use True for ΔW = 0 at start"
            )
        factor = self.decompose_factor
        if isinstance(factor, bool) or not isinstance(factor, int) or (factor <= 0 and factor != -1):
            raise ValueError(
                f"decompose_factor={factor!r} must be a positive integer or -1 (split near the square root)"
            )
