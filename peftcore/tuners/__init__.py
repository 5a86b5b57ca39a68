"""One package per method (config / layer / model); `tuner_class_for` picks the injector."""

from __future__ import annotations

from typing import Any

from peftcore.config import PeftConfig, PeftType
from peftcore.tuners.lora import LoraConfig, LoraModel

TUNERS: dict[PeftType, Any] = {PeftType.LORA: LoraModel}


def tuner_class_for(config: PeftConfig) -> Any:
    try:
        return TUNERS[PeftType(config.peft_type)]
    except (KeyError, ValueError):
        raise ValueError(f"peft_type={config.peft_type!r} has no tuner in peftcore") from None


__all__ = ["TUNERS", "LoraConfig", "LoraModel", "tuner_class_for"]
