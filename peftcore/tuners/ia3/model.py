"""`IA3Model`: (IA)³ on a model — which layer class wraps which module, feed-forward or not.

Everything shared with other adapter-layer methods (matching, activating, merging, unloading) lives in
`BaseTuner`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, ClassVar, cast

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftcore.config import PeftConfig
from peftcore.constants import (
    TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
)
from peftcore.injection import model_type_of
from peftcore.tuners.base import BaseTuner
from peftcore.tuners.base_layer import BaseTunerLayer
from peftcore.tuners.ia3.config import IA3Config
from peftcore.tuners.ia3.layer import Conv2d, Conv3d, IA3Layer, Linear

_SUPPORTED = "`torch.nn.Linear`, `torch.nn.Conv2d`, `torch.nn.Conv3d` and `transformers.pytorch_utils.Conv1D`"


def ia3_layer_class(module: nn.Module) -> type[IA3Layer] | None:
    base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
    for module_type, layer_cls in (
        (nn.Conv2d, Conv2d),
        (nn.Conv3d, Conv3d),
        (nn.Linear, Linear),
        (Conv1D, Linear),
    ):
        if isinstance(base, module_type):
            return layer_cls
    return None


class IA3Model(BaseTuner):
    """The (IA)³ tuner: `self.model` is the transformers model with (IA)³ layers swapped in."""

    prefix: ClassVar[str] = "ia3_"
    layer_cls: ClassVar[type[BaseTunerLayer]] = IA3Layer
    default_target_modules: ClassVar[dict[str, Any]] = TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING
    method_name: ClassVar[str] = "(IA)³"
    supports_quantized_layers: ClassVar[bool] = True  # merging goes through peftcore.tuners.quantized

    def _prepare_adapter_config(self, config: PeftConfig, model: nn.Module) -> PeftConfig:
        config = super()._prepare_adapter_config(config, model)
        ia3 = cast(IA3Config, config)
        if ia3.feedforward_modules is None:
            model_type = model_type_of(model)
            if model_type not in TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING:
                raise ValueError(
                    "Please specify `feedforward_modules` in `peft_config`: model_type="
                    f"{model_type!r} has no default (IA)³ feed-forward modules; pass feedforward_modules=[...] "
                    "(the targets whose input is scaled) or [] for none"
                )
            ia3.feedforward_modules = set(TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING[model_type])
        return config

    def _check_target_module(
        self, config: PeftConfig, adapter_name: str, name: str, module: nn.Module
    ) -> None:
        if ia3_layer_class(module) is None:
            raise ValueError(
                f"Target module {name!r} is a {type(module).__name__}, which (IA)³ cannot wrap. Target module "
                f"{type(module).__name__} is not supported. Currently, only {_SUPPORTED} are supported. Adjust "
                "target_modules or exclude_modules"
            )
        if isinstance(module, IA3Layer) and module.is_feedforward != cast(IA3Config, config).is_feedforward(
            name
        ):
            raise ValueError(
                f"module {name!r} is {'' if module.is_feedforward else 'not '}a feed-forward module of the (IA)³ "
                f"adapters it already holds, but feedforward_modules of adapter {adapter_name!r} says otherwise; "
                "give every adapter the same feedforward_modules"
            )

    def _create_and_replace(
        self,
        config: PeftConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs: Any,
    ) -> None:
        config = cast(IA3Config, config)
        if isinstance(target, IA3Layer):
            target.update_layer(adapter_name, config, **kwargs)
            return
        layer_cls = ia3_layer_class(target)
        extra: dict[str, Any] = {"is_feedforward": config.is_feedforward(current_key)}
        if layer_cls is Linear:
            extra.update(self._linear_layout(config, target, current_key))
        factory: Any = layer_cls
        setattr(parent, target_name, factory(target, adapter_name, config=config, **extra, **kwargs))

    @staticmethod
    def _linear_layout(config: IA3Config, target: nn.Module, name: str) -> dict[str, Any]:
        """fan_in_fan_out as the module stores its weight (recorded in the config, as HF PEFT does)."""
        is_conv1d = isinstance(target, Conv1D)
        if config.fan_in_fan_out != is_conv1d:
            warnings.warn(
                f"fan_in_fan_out is set to {config.fan_in_fan_out} but the target module {name!r} is "
                f"`{type(target).__name__}`. Setting fan_in_fan_out to {is_conv1d}.",
                stacklevel=6,
            )
            config.fan_in_fan_out = is_conv1d
        return {"fan_in_fan_out": is_conv1d, "is_target_conv_1d_layer": is_conv1d}

    # -- weighted combinations --------------------------------------------------------------------
    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str) -> None:
        """Create `adapter_name` whose vectors are `Σ weight_i · l_i` over `adapters` (not activated).

        Raises:
            ValueError: an unknown adapter, targets or feed-forward modules of different kinds (names vs
                regex), or two adapters training the same module in full.
        """
        if adapter_name in self.peft_config:
            return
        for name in adapters:
            if name not in self.peft_config:
                raise ValueError(f"Adapter {name} does not exist; available: {sorted(self.peft_config)}")
        configs = [cast(IA3Config, self.peft_config[name]) for name in adapters]
        for _, wrapper in self.auxiliary_wrappers():
            if sum(name in wrapper.adapter_names_held() for name in adapters) > 1:
                raise ValueError(
                    "Cannot add weighted adapters targeting the same module with modules_to_save."
                )
        targets = _union([c.target_modules for c in configs], "target_modules")
        feedforward = _union([c.feedforward_modules for c in configs], "feedforward_modules")
        new_config = dataclasses.replace(configs[0], target_modules=targets, feedforward_modules=feedforward)
        self.inject_adapter(self.model, adapter_name, config=new_config)
        self.set_requires_grad(adapter_name, False)
        with torch.no_grad():
            for _, layer in self.tuner_layers():
                if not isinstance(layer, IA3Layer) or adapter_name not in layer.ia3_l:
                    continue
                target = layer.ia3_l[adapter_name]
                target.zero_()
                for name, weight in zip(adapters, weights, strict=True):
                    if name in layer.ia3_l:
                        target.add_(layer.ia3_l[name] * weight)


def _union(values: list[Any], field: str) -> Any:
    kinds = {type(v) for v in values}
    if len(kinds) > 1:
        raise ValueError(
            "All adapter configs should have the same type for target and feedforward modules: "
            f"{field} mixes names and regexes; give every adapter the same kind"
        )
    if str in kinds:
        return "|".join(f"({v})" for v in values)
    return set().union(*[v or set() for v in values])
