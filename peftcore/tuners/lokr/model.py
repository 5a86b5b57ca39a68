"""`LoKrModel`: LoKr on a model (Linear, Conv1d and Conv2d layers; matching and merging in `BaseTuner`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from peftcore.constants import TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING
from peftcore.tuners.base_layer import BaseTunerLayer
from peftcore.tuners.lokr.layer import LoKrLayer
from peftcore.tuners.lycoris import LycorisModel


class LoKrModel(LycorisModel):
    prefix: ClassVar[str] = "lokr_"
    layer_cls: ClassVar[type[BaseTunerLayer]] = LoKrLayer
    default_target_modules: ClassVar[dict[str, Any]] = TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING
    method_name: ClassVar[str] = "LoKr"
    layer_classes: ClassVar[dict[type[nn.Module], type[nn.Module]]] = {
        nn.Conv2d: LoKrLayer,
        nn.Conv1d: LoKrLayer,
        nn.Linear: LoKrLayer,
    }
