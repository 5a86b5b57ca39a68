"""What the LyCORIS-family methods (LoHa, LoKr) share: a delta weight built from small factors.

    y = base(x) + conv_or_linear(x, ΔW)        ΔW = scaling · f(factors),  scaling = alpha / r

A method says how its factors are shaped and combined (`delta_weight`); this module does the rest
for `nn.Linear`, `nn.Conv1d` and `nn.Conv2d` base layers: the forward (the delta applied with the
base layer's own stride / padding / groups), merging (`W += ΔW`, exact to rounding; unmerge
subtracts), `rank_dropout` (during training, whole output rows of ΔW are dropped) and
`module_dropout` (during training, the whole adapter is skipped for a step with that probability).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from peftcore.config import PeftConfig
from peftcore.constants import LORA_DEFAULT_TARGETS
from peftcore.tuners.base import BaseTuner
from peftcore.tuners.base_layer import BaseTunerLayer, adapter_dtype_for, features_of
from peftcore.tuners.config_checks import (
    as_module_list,
    as_name_set,
    check_layer_selection,
    check_positive_int,
    check_probability,
    check_rank_pattern,
    pattern_value,
)

SUPPORTED_LAYERS = (nn.Conv2d, nn.Conv1d, nn.Linear)


@dataclass
class LycorisConfig(PeftConfig):
    """Fields LoHa and LoKr share (HF PEFT's names and defaults).

    Args:
        r: the rank of the factors.
        alpha: ΔW is scaled by alpha / r.
        rank_dropout: during training, the probability of dropping each output row of ΔW.
        module_dropout: during training, the probability of skipping the adapter for a whole step.
        use_effective_conv2d: factor a k×k convolution kernel through a small core tensor (the
            LyCORIS "CP" form) instead of flattening it.
        target_modules, exclude_modules: which Linear / Conv1d / Conv2d modules to adapt (as in LoRA).
        init_weights: start ΔW at zero (True) or random (False).
        layers_to_transform, layers_pattern: restrict the targets to some layer indices.
        rank_pattern, alpha_pattern: per-module overrides of r and alpha (keys are regexes matched
            against the module's name suffix).
        modules_to_save: extra modules trained in full and saved.
    """

    r: int = 8
    alpha: float = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    use_effective_conv2d: bool = False
    target_modules: list[str] | set[str] | str | None = None
    exclude_modules: list[str] | set[str] | str | None = None
    init_weights: bool | str = True
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, Any] = field(default_factory=dict)
    alpha_pattern: dict[str, Any] = field(default_factory=dict)
    modules_to_save: list[str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("r", self.r)
        check_probability("rank_dropout", self.rank_dropout)
        check_probability("module_dropout", self.module_dropout)
        self.target_modules = as_name_set(self.target_modules, "target_modules")
        self.exclude_modules = as_name_set(self.exclude_modules, "exclude_modules")
        self.modules_to_save = as_module_list(self.modules_to_save)
        self.rank_pattern = dict(self.rank_pattern or {})
        self.alpha_pattern = dict(self.alpha_pattern or {})
        check_rank_pattern(self.rank_pattern)
        check_layer_selection(self)

    def rank_and_alpha(self, module_name: str) -> tuple[int, float]:
        r = pattern_value(self.rank_pattern, module_name, self.r)
        return int(r), float(pattern_value(self.alpha_pattern, module_name, self.alpha))


class LycorisLayer(BaseTunerLayer):
    """One wrapped Linear / Conv1d / Conv2d holding per-adapter factors; a method implements
    `create_factors` and `combine` (the factors → ΔW before scaling, any shape with the weight's size)."""

    other_param_names: tuple[str, ...] = ("r", "alpha", "scaling", "rank_dropout", "module_dropout")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        BaseTunerLayer.__init__(self, base_layer)
        self.r: dict[str, int] = {}
        self.alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.rank_dropout: dict[str, float] = {}
        self.module_dropout: dict[str, float] = {}
        in_features, out_features = features_of(self.get_base_layer())
        self.in_features = int(in_features or 0)
        self.out_features = int(out_features or 0)
        for name in self.adapter_layer_names:
            setattr(self, name, nn.ParameterDict())

    # -- a method implements ----------------------------------------------------------------------
    def create_factors(self, adapter_name: str, r: int, config: Any) -> dict[str, torch.Tensor]:
        """The adapter's factors by container name, initialised as `config.init_weights` says."""
        raise NotImplementedError

    def combine(self, adapter_name: str) -> torch.Tensor:
        """The unscaled ΔW of `adapter_name` from its factors."""
        raise NotImplementedError

    def rescales_rank_dropout(self, adapter_name: str) -> bool:
        """Divide the rows `rank_dropout` keeps by the fraction kept (LoHa always; LoKr on request)."""
        return True

    # -- adapters ---------------------------------------------------------------------------------
    def update_layer(
        self,
        adapter_name: str,
        config: Any,
        r: int,
        alpha: float,
        low_cpu_mem_usage: bool = False,
        autocast_adapter_dtype: bool = True,
        **kwargs: Any,
    ) -> None:
        self.r[adapter_name] = r
        self.alpha[adapter_name] = alpha
        self.scaling[adapter_name] = alpha / r
        self.rank_dropout[adapter_name] = config.rank_dropout
        self.module_dropout[adapter_name] = config.module_dropout
        weight = cast(torch.Tensor, cast(Any, self.get_base_layer()).weight)
        dtype = adapter_dtype_for(weight, autocast_adapter_dtype)
        device = torch.device("meta") if low_cpu_mem_usage else weight.device  # filled by the loader
        for name, tensor in self.create_factors(adapter_name, r, config).items():
            box = cast(nn.ParameterDict, getattr(self, name))
            box[adapter_name] = nn.Parameter(tensor.to(device=device, dtype=dtype))
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def delta_weight(self, adapter_name: str, rank_dropout: bool = False) -> torch.Tensor:
        """ΔW of `adapter_name` in the base weight's shape (rows dropped when `rank_dropout`)."""
        weight = cast(torch.Tensor, cast(Any, self.get_base_layer()).weight)
        delta = (self.combine(adapter_name) * self.scaling[adapter_name]).reshape(weight.shape)
        if rank_dropout:
            keep = (torch.rand(delta.shape[0], device=delta.device) > self.rank_dropout[adapter_name]).to(
                delta.dtype
            )
            if self.rescales_rank_dropout(adapter_name) and keep.sum() > 0:
                keep = keep / keep.mean()
            delta = delta * keep.view(-1, *([1] * (delta.dim() - 1)))
        return delta

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        return self.delta_weight(adapter_name)

    def _merged_params(
        self, adapter_name: str, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return weight + self.delta_weight(adapter_name).detach().to(weight.dtype), None

    def _unmerged_params(
        self, adapter_name: str, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return weight - self.delta_weight(adapter_name).detach().to(weight.dtype), None

    # -- forward ----------------------------------------------------------------------------------
    def _apply_delta(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        base: Any = self.get_base_layer()
        if isinstance(base, nn.Conv2d):
            return F.conv2d(
                x, delta, stride=base.stride, padding=base.padding, dilation=base.dilation, groups=base.groups
            )
        if isinstance(base, nn.Conv1d):
            return F.conv1d(
                x, delta, stride=base.stride, padding=base.padding, dilation=base.dilation, groups=base.groups
            )
        return F.linear(x, delta)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._skip_adapters() or self.merged:
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        training = cast(nn.Module, self).training
        for name in self.active_adapters:
            if name not in self.r or name in self.merged_adapters:
                continue
            if training and self.module_dropout[name] and torch.rand(1).item() <= self.module_dropout[name]:
                continue
            delta = self.delta_weight(name, rank_dropout=training and bool(self.rank_dropout[name]))
            result = result + self._apply_delta(self._cast_input_dtype(x, delta.dtype), delta).to(
                result.dtype
            )
        return result


class LycorisModel(BaseTuner):
    """The tuner shared by LoHa and LoKr; a method sets `layer_classes` (base module type → layer class)."""

    default_target_modules: ClassVar[dict[str, Any]] = LORA_DEFAULT_TARGETS
    layer_classes: ClassVar[dict[type[nn.Module], type[nn.Module]]] = {}

    def _layer_class(self, module: nn.Module) -> type[nn.Module] | None:
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        for module_type, layer_cls in self.layer_classes.items():
            if isinstance(base, module_type):
                return layer_cls
        return None

    def _check_target_module(
        self, config: PeftConfig, adapter_name: str, name: str, module: nn.Module
    ) -> None:
        if self._layer_class(module) is None:
            supported = ", ".join(t.__name__ for t in self.layer_classes)
            raise TypeError(
                f"Target module {name!r} of type {type(module)} not supported, currently only adapters for "
                f"{supported} are supported by {self.method_name}; adjust target_modules (or exclude_modules) "
                "so that it names only such layers"
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
        r, alpha = cast(LycorisConfig, config).rank_and_alpha(current_key)
        if isinstance(target, self.layer_cls):
            cast(LycorisLayer, target).update_layer(adapter_name, config, r=r, alpha=alpha, **kwargs)
            return
        factory: Any = self._layer_class(target)
        setattr(parent, target_name, factory(target, adapter_name, config=config, r=r, alpha=alpha, **kwargs))
