"""`LoHaConfig`: HF PEFT's LoHa fields and defaults (the shared ones are in `tuners/lycoris.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftcore.config import PeftType
from peftcore.tuners.lycoris import LycorisConfig


@dataclass
class LoHaConfig(LycorisConfig):
    """LoHa: ΔW is the Hadamard (element-wise) product of two rank-r products (see `layer.py`).

    All fields are `LycorisConfig`'s; `init_weights=True` starts one factor at zero (ΔW = 0).
    """

    PEFT_TYPE: ClassVar[PeftType] = PeftType.LOHA

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.init_weights, bool):
            raise ValueError(
                f"init_weights={self.init_weights!r} must be True (ΔW starts at 0) or False (random)"
            )
