"""`LoraModel`: LoRA on a model — which LoRA layer wraps which module, and the LoRA-only operations
(weighted combinations of adapters, per-parameter LoRA, trainable tokens, mixed-batch checks).

Everything shared with other adapter-layer methods (matching, activating, merging, unloading) lives in
`BaseTuner`.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, cast

from torch import nn
from transformers.pytorch_utils import Conv1D

from peftcore.config import PeftConfig
from peftcore.constants import LORA_DEFAULT_TARGETS
from peftcore.tuners.base import BaseTuner
from peftcore.tuners.base_layer import BaseTunerLayer
from peftcore.tuners.lora import bnb, conversion, tying, weighted
from peftcore.tuners.lora import param as param_lora
from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.conv import Conv1d, Conv2d, Conv3d
from peftcore.tuners.lora.embedding import Embedding
from peftcore.tuners.lora.layer import LoraLayer
from peftcore.tuners.lora.linear import Linear
from peftcore.tuners.lora.mha import MultiheadAttention
from peftcore.tuners.lora.svd_init import is_weight_moving_init

# HF PEFT's name for the default-targets table; the same dict object as in constants.
TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING = LORA_DEFAULT_TARGETS

_SUPPORTED = (
    "`torch.nn.Linear`, `torch.nn.Embedding`, `torch.nn.Conv1d`, `torch.nn.Conv2d`, `torch.nn.Conv3d`, "
    "`transformers.pytorch_utils.Conv1D`, `torch.nn.MultiheadAttention.`"
)


def lora_layer_class(config: LoraConfig, module: nn.Module) -> type[nn.Module] | None:
    """The LoRA layer class for `module` (a custom one registered on the config first), or None."""
    base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
    for module_type, layer_cls in (config._custom_modules or {}).items():
        if isinstance(base, module_type):
            return layer_cls
    kind = bnb.quantized_kind(base)  # before nn.Linear: bitsandbytes layers subclass it
    if kind is not None:
        return bnb.LAYER_CLASSES[kind]
    if bnb.foreign_quantization(base) is not None:
        return None  # quantized by another library: never wrapped as if it were a float layer
    table: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
        (nn.Embedding, Embedding),
        (nn.Conv1d, Conv1d),
        (nn.Conv2d, Conv2d),
        (nn.Conv3d, Conv3d),
        (nn.MultiheadAttention, MultiheadAttention),
        (nn.Linear, Linear),
        (Conv1D, Linear),
    )
    for module_type, layer_cls in table:
        if isinstance(base, module_type):
            return layer_cls
    return None


class LoraModel(BaseTuner):
    """The LoRA tuner: `self.model` is the transformers model with LoRA layers swapped in."""

    convert_for_initial_model = staticmethod(conversion.convert_for_initial_model)

    prefix: ClassVar[str] = "lora_"
    layer_cls: ClassVar[type[BaseTunerLayer]] = LoraLayer
    default_target_modules: ClassVar[dict[str, Any]] = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    method_name: ClassVar[str] = "LoRA"
    supports_quantized_layers: ClassVar[bool] = True
    supports_mixed_batch: ClassVar[bool] = True

    # -- which layer, and can it take this adapter ------------------------------------------------
    def _check_target_module(
        self, config: PeftConfig, adapter_name: str, name: str, module: nn.Module
    ) -> None:
        config = cast(LoraConfig, config)
        layer_cls = lora_layer_class(config, module)
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        foreign = bnb.foreign_quantization(base)
        if layer_cls is None and foreign is not None:
            raise ValueError(
                f"Target module {name!r} ({type(base).__module__}.{type(base).__name__}) is quantized in a way "
                f"peftcore does not support: {foreign}. peftcore adapts float layers and bitsandbytes Linear4bit / "
                "Linear8bitLt layers; load the base with bitsandbytes (BitsAndBytesConfig) or unquantized, or "
                "leave this module out of target_modules"
            )
        if layer_cls is None:
            raise ValueError(
                f"Target module {name!r} is a {type(module).__name__}, which LoRA cannot wrap. Target module "
                f"{type(module).__name__} is not supported. Currently, only the following modules are supported: "
                f"{_SUPPORTED} Adjust target_modules or exclude_modules"
            )
        r, _ = config.rank_and_alpha(name)
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        if config.init_lora_weights == "orthogonal" and r % 2 != 0:
            raise ValueError(
                f"Orthogonal initialization requires the LoRA rank to be even, got {r} instead. Use an even r "
                "(or rank_pattern entry) for init_lora_weights='orthogonal'"
            )
        if isinstance(base, nn.Conv1d | nn.Conv2d | nn.Conv3d) and r % base.groups != 0:
            raise ValueError(
                f"Targeting a {type(base).__name__} with groups={base.groups} and rank {r}. Currently, support is "
                "limited to conv layers where the rank is divisible by groups. Either choose a different rank or do "
                "not target this specific layer."
            )
        if isinstance(base, nn.Embedding) and config.lora_bias:
            raise ValueError(
                f"lora_bias=True is not supported for Embedding ({name!r}): set lora_bias=False or exclude it"
            )
        if isinstance(base, nn.MultiheadAttention):
            MultiheadAttention.check_supported(base, config)
        if is_weight_moving_init(config.init_lora_weights) and not isinstance(base, nn.Linear | Conv1D):
            raise ValueError(
                f"init_lora_weights={config.init_lora_weights!r} works on Linear / Conv1D layers only, but {name!r} "
                f"is a {type(base).__name__}; exclude it (exclude_modules) or use init_lora_weights=True"
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
        config = cast(LoraConfig, config)
        r, alpha = config.rank_and_alpha(current_key)
        if isinstance(target, LoraLayer):
            target.update_layer(adapter_name, r, alpha, config, **kwargs)
            return
        layer_cls = lora_layer_class(config, target)
        extra: dict[str, Any] = {}
        if layer_cls is Linear:
            extra = self._linear_layout(config, target, current_key)
        if layer_cls is None:  # checked in _check_target_module; kept for a clear error if called directly
            raise ValueError(
                f"Target module {current_key!r} ({type(target).__name__}) cannot be wrapped by LoRA"
            )
        factory: Any = layer_cls
        new = factory(target, adapter_name, config=config, r=r, lora_alpha=alpha, **extra, **kwargs)
        setattr(parent, target_name, new)

    @staticmethod
    def _linear_layout(config: LoraConfig, target: nn.Module, name: str) -> dict[str, Any]:
        """fan_in_fan_out as the module stores its weight (recorded in the config, as HF PEFT does)."""
        if isinstance(target, Conv1D):
            if not config.fan_in_fan_out:
                warnings.warn(
                    f"fan_in_fan_out is set to False but the target module {name!r} is `Conv1D` (weight stored "
                    "in x out). Setting fan_in_fan_out to True.",
                    stacklevel=6,
                )
                config.fan_in_fan_out = True
            return {"fan_in_fan_out": True, "is_target_conv_1d_layer": True}
        if config.fan_in_fan_out:
            warnings.warn(
                f"fan_in_fan_out is set to True but the target module {name!r} is `torch.nn.Linear`. Setting "
                "fan_in_fan_out to False.",
                stacklevel=6,
            )
            config.fan_in_fan_out = False
        return {"fan_in_fan_out": False}

    # -- tied embeddings (ensure_weight_tying) ----------------------------------------------------
    def _prepare_adapter_config(self, config: PeftConfig, model: nn.Module) -> PeftConfig:
        # A runtime note for this injection only (never saved): the tied modules to adapt as well. Planned
        # on the targets as the user gave them, before defaults and "all-linear" are expanded (as HF PEFT).
        tie_targets = tying.plan_tying(cast(LoraConfig, config), model)
        config = super()._prepare_adapter_config(config, model)
        config._tie_targets = tie_targets  # type: ignore[attr-defined]
        return config

    def _extra_targets(self, config: PeftConfig) -> list[str]:
        return list(getattr(config, "_tie_targets", []))

    def _after_injection(self, config: PeftConfig, adapter_name: str, model: nn.Module) -> None:
        tying.tie_adapters(cast(LoraConfig, config), adapter_name, model)

    # -- LoRA on parameters (target_parameters) ---------------------------------------------------
    def _plan_parameters(self, config: PeftConfig, model: nn.Module) -> list[str]:
        return param_lora.plan(cast(LoraConfig, config), model, self.peft_config)

    def _inject_parameters(
        self, config: PeftConfig, adapter_name: str, model: nn.Module, names: list[str], **kwargs: Any
    ) -> None:
        param_lora.inject(cast(LoraConfig, config), adapter_name, model, names, **kwargs)

    # -- checks -----------------------------------------------------------------------------------
    def _check_mixed_batch(self, adapter_names: list[str]) -> None:
        super()._check_mixed_batch(adapter_names)
        used = set(adapter_names) - {"__base__"}
        if any(getattr(self.peft_config[name], "use_dora", False) for name in used):
            raise ValueError(
                "Cannot pass `adapter_names` when DoRA is enabled: DoRA rescales whole weight rows, which one "
                "forward pass cannot do per batch row. Leave DoRA adapters out of adapter_names"
            )

    # -- weighted combinations --------------------------------------------------------------------
    def add_weighted_adapter(
        self,
        adapters: list[str],
        weights: list[float],
        adapter_name: str,
        combination_type: str = "svd",
        svd_rank: int | None = None,
        svd_clamp: float | None = None,
        svd_full_matrices: bool = True,
        svd_driver: str | None = None,
        density: float | None = None,
        majority_sign_method: str = "total",
    ) -> None:
        """Create `adapter_name` as a weighted combination of existing LoRA adapters.

        See `weighted.add_weighted_adapter` for the combination types ("svd", "linear", "cat", "ties",
        "dare_linear", "dare_ties", "magnitude_prune" and their "_svd" variants).
        """
        weighted.add_weighted_adapter(
            self,
            adapters,
            weights,
            adapter_name,
            combination_type=combination_type,
            svd_rank=svd_rank,
            svd_clamp=svd_clamp,
            svd_full_matrices=svd_full_matrices,
            svd_driver=svd_driver,
            density=density,
            majority_sign_method=majority_sign_method,
        )

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
