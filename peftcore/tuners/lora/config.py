"""`LoraConfig`: every field HF PEFT's LoRA writes that changes what the adapter computes."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from torch import nn

from peftcore.config import PeftConfig, PeftType
from peftcore.tuners.config_checks import as_name_set, check_layer_selection, pattern_value
from peftcore.tuners.lora.svd_init import check_init_name, is_weight_moving_init

# HF PEFT LoRA fields peftcore does not implement, with the value meaning "feature off". A file
# that turns one of them on is refused (see PeftConfig.from_dict).
_NEUTRAL: dict[str, Any] = {
    "loftq_config": {},
    "eva_config": None,
    "corda_config": None,
    "lora_ga_config": None,
    "velora_config": None,
    "alora_invocation_tokens": None,
    "use_qalora": False,
    "monteclora_config": None,
    "layer_replication": None,
    "use_bdlora": None,
    "arrow_config": None,
    "kasa_config": None,
}
# HF PEFT fields that carry no meaning unless one of the features above is on; dropped silently
# whatever their value (HF PEFT writes `megatron_core: "megatron.core"`, `qalora_group_size: 16`).
_INERT = (
    "qalora_group_size",
    "runtime_config",
    "direction",
    "scale",
    "stable_gamma",
    "num_samples",
    "use_entropy",
    "dirichlet_prior",
    "sample_scaler",
    "kl_loss_weight",
    "buffer_size",
)

InitLora = bool | str  # True, False, "gaussian", "orthogonal", "pissa", "pissa_niter_<k>", "olora"
_INITS: tuple[Any, ...] = (True, False, "gaussian", "orthogonal", "olora", "OLoRA")


@dataclass
class LoraConfig(PeftConfig):
    """Low-rank adaptation: `y = W x + (lora_alpha / r) * B A x` on each targeted layer.

    Args:
        r: rank of the update (A is r x in, B is out x r).
        target_modules: module names (exact or dotted suffix), a regex matching full names, or
            "all-linear". Unset: the default for the model's architecture.
        exclude_modules: names or a regex to leave out of `target_modules`.
        lora_alpha: scaling numerator; scaling is `lora_alpha / r` (or `/ sqrt(r)` with `use_rslora`).
        lora_dropout: dropout on the adapter's input, in [0, 1).
        fan_in_fan_out: the base weight is stored (in, out), as GPT-2's Conv1D does.
        bias: which biases train: "none", "all", or "lora_only" (those of adapted layers).
        use_rslora: rank-stabilised scaling `lora_alpha / sqrt(r)`.
        modules_to_save: extra modules trained in full and saved (e.g. a new head).
        init_lora_weights: True (A kaiming-uniform, B zero), "gaussian" (A ~ N(0, 1/r)), "orthogonal"
            (A, B non-zero with B A = 0; even r), "pissa" / "pissa_niter_<k>" / "olora" (A, B from the
            base weight's SVD / QR, the base keeps the residual: see `svd_init.py`), or False (random B
            too: not the identity at init).
        layers_to_transform: only adapt these layer indices.
        layers_pattern: the name of the layer list (e.g. "layers", "h") used with layers_to_transform.
        rank_pattern: per-module rank overrides, keyed by name or regex.
        alpha_pattern: per-module alpha overrides, keyed by name or regex.
        use_dora: weight-decomposed LoRA (magnitude vector + LoRA direction).
        lora_bias: give B a bias (trained, merged into the base layer's bias).
        target_parameters: parameter names (e.g. "experts.gate_up_proj") adapted directly, for
            weights used without a Linear module (MoE experts).
        trainable_token_indices: embedding rows trained in full: a list of token ids (input
            embedding) or {module name: token ids}.
        ensure_weight_tying: keep an adapter on a tied input embedding / output head tied too.
        megatron_config: Megatron-LM parallel layers; not supported by peftcore (kept for validation).
        megatron_core: the Megatron module path HF PEFT records.
    """

    PEFT_TYPE: ClassVar[PeftType] = PeftType.LORA
    NEUTRAL_FOREIGN_FIELDS: ClassVar[dict[str, Any]] = _NEUTRAL
    INERT_FOREIGN_FIELDS: ClassVar[tuple[str, ...]] = _INERT

    r: int = 8
    target_modules: list[str] | set[str] | str | None = None
    exclude_modules: list[str] | set[str] | str | None = None
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = False
    modules_to_save: list[str] | None = None
    init_lora_weights: InitLora = True
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    use_dora: bool = False
    lora_bias: bool = False
    target_parameters: list[str] | None = None
    trainable_token_indices: list[int] | dict[str, list[int]] | None = None
    ensure_weight_tying: bool = False
    megatron_config: dict[str, Any] | None = None
    megatron_core: str | None = "megatron.core"

    def __post_init__(self) -> None:
        super().__post_init__()
        # Custom layer classes (`_register_custom_module`): a runtime setting, never saved.
        self._custom_modules: dict[type[nn.Module], type[nn.Module]] | None = None
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"r={self.r!r} must be a positive integer (the LoRA rank), e.g. r=8")
        if not isinstance(self.lora_alpha, int | float) or not math.isfinite(self.lora_alpha):
            raise ValueError(f"lora_alpha={self.lora_alpha!r} must be a finite number, e.g. lora_alpha=16")
        if not isinstance(self.lora_dropout, int | float) or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(
                f"lora_dropout={self.lora_dropout!r} must be in [0, 1); use 0.0 to disable dropout"
            )
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError(f"bias={self.bias!r} must be one of 'none', 'all', 'lora_only'")
        init = self.init_lora_weights
        if isinstance(init, str) and init.startswith("pissa"):
            check_init_name(init)
        elif not (isinstance(init, bool) or (isinstance(init, str) and init in _INITS)):
            raise ValueError(
                f"init_lora_weights={self.init_lora_weights!r} is not supported; "
                "use True (default), 'gaussian', 'orthogonal', 'pissa', 'pissa_niter_<k>', 'olora' or False"
            )
        self.target_modules = as_name_set(self.target_modules, "target_modules")
        self.exclude_modules = as_name_set(self.exclude_modules, "exclude_modules")
        if self.target_parameters is not None:
            if not isinstance(self.target_parameters, list | tuple) or not all(
                isinstance(p, str) for p in self.target_parameters
            ):
                raise TypeError(
                    f"`target_parameters` must be a list of strings or None, got {self.target_parameters!r}; "
                    "e.g. target_parameters=['experts.gate_up_proj']"
                )
            self.target_parameters = list(self.target_parameters)
        if self.modules_to_save is not None:
            if isinstance(self.modules_to_save, str):
                raise TypeError(
                    f"modules_to_save={self.modules_to_save!r} must be a list of module names, "
                    f"e.g. [{self.modules_to_save!r}]"
                )
            self.modules_to_save = list(self.modules_to_save)
        check_layer_selection(self)
        if self.use_rslora and (self.rank_pattern or self.alpha_pattern) and is_weight_moving_init(init):
            warnings.warn(
                "Using Rank-Stabilized LoRA with rank_pattern/alpha_pattern and post-training conversion of modified "
                "base weights PiSSA/OLoRA means that you won't be able to pass "
                "`path_initial_model_for_weight_conversion` to `save_pretrained` to restore the initial values of the "
                "base weights; if you intend to do this, please ensure not to use rslora or rank_pattern/alpha_pattern.",
                UserWarning,
                stacklevel=3,
            )
        for name, value in self.rank_pattern.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"rank_pattern[{name!r}]={value!r} must be a positive integer")
        if self.use_dora and self.megatron_config:
            raise ValueError("DoRA does not support megatron_core, please set `use_dora=False`.")
        if self.lora_bias:
            if self.use_dora:
                raise ValueError(
                    "The argument lora_bias=True is not supported for DoRA, please pass use_dora=False"
                )
            if self.init_lora_weights not in (True, False):
                raise ValueError(
                    f"The argument lora_bias=True is not supported for init_lora_weights={self.init_lora_weights!r}; "
                    "use init_lora_weights=True or False"
                )

    def _register_custom_module(self, mapping: dict[type[nn.Module], type[nn.Module]]) -> None:
        """Use the given LoRA layer classes for the given module types (experimental, as in HF PEFT)."""
        if self._custom_modules is None:
            self._custom_modules = {}
        self._custom_modules.update(mapping)

    def rank_and_alpha(self, module_name: str) -> tuple[int, float]:
        """The rank and alpha for one module after `rank_pattern` / `alpha_pattern` overrides."""
        r = pattern_value(self.rank_pattern, module_name, self.r)
        alpha = pattern_value(self.alpha_pattern, module_name, self.lora_alpha)
        return int(r), float(alpha)

    def scaling_for(self, r: int, alpha: float) -> float:
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r
