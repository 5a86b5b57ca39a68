"""`LoHaModel`: LoHa on a model (Linear, Conv1d and Conv2d layers; matching and merging in `BaseTuner`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from peftcore.constants import TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING
from peftcore.tuners.base_layer import BaseTunerLayer
from peftcore.tuners.loha.layer import LoHaLayer
from peftcore.tuners.lycoris import LycorisModel


class LoHaModel(LycorisModel):
    prefix: ClassVar[str] = "hada_"
    layer_cls: ClassVar[type[BaseTunerLayer]] = LoHaLayer
    default_target_modules: ClassVar[dict[str, Any]] = TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING
    method_name: ClassVar[str] = "LoHa"
    layer_classes: ClassVar[dict[type[nn.Module], type[nn.Module]]] = {
        nn.Conv2d: LoHaLayer,
        nn.Conv1d: LoHaLayer,
        nn.Linear: LoHaLayer,
    }
