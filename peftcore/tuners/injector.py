"""`AdapterInjector`: adding one adapter to a model in two phases, plan then apply.

`plan` resolves which modules (and parameters) the adapter targets and lets the method check each of
them; it changes nothing, so a bad config or an unsupported module fails with the model untouched.
`apply` wraps the targets and the auxiliary modules; `rollback` removes every trace of the adapter if
`apply` fails half-way.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.config import PeftConfig
from peftcore.injection import (
    Match,
    get_submodule_parent,
    is_wrapper,
    logical_modules,
    match_module,
    name_matches,
    replace_module,
    sample_module_names,
    show_targets,
)
from peftcore.tuners.base_layer import BaseTunerLayer
from peftcore.tuners.quantized import quantized_kind

if TYPE_CHECKING:
    from peftcore.tuners.base import BaseTuner


class AdapterInjector:
    """Adds `adapter_name` (described by `config`) to `model` on behalf of `tuner`."""

    def __init__(
        self,
        tuner: BaseTuner,
        model: nn.Module,
        config: PeftConfig,
        adapter_name: str,
        low_cpu_mem_usage: bool,
        autocast_adapter_dtype: bool,
    ) -> None:
        self.tuner = tuner
        self.model = model
        self.config = config
        self.adapter_name = adapter_name
        self.layer_kwargs: dict[str, Any] = {
            "low_cpu_mem_usage": low_cpu_mem_usage,
            "autocast_adapter_dtype": autocast_adapter_dtype,
        }
        self.targeted: list[str] = []
        self.targeted_parameters: list[str] = []
        self.saved_modules: list[str] = tuner.modules_to_save_for(config)

    # -- phase 1 ----------------------------------------------------------------------------------
    def plan(self, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Find and check every target. Raises before anything in the model changes."""
        config = self.config
        targets = getattr(config, "target_modules", None)
        excluded: list[str] = []
        unmatched: list[str] = []
        from_state_dict = _module_names_in_state_dict(state_dict, self.tuner.prefix)
        extra = set(self.tuner._extra_targets(config))
        for name, _ in logical_modules(self.model):
            if not name:
                continue
            outcome = match_module(
                name,
                targets,
                getattr(config, "exclude_modules", None),
                self.saved_modules,
                getattr(config, "layers_to_transform", None),
                getattr(config, "layers_pattern", None),
            )
            if from_state_dict is not None:
                outcome = Match.TARGET if name in from_state_dict else Match.NONE
            elif name in extra:
                outcome = Match.TARGET
            if outcome is Match.TARGET:
                self.targeted.append(name)
            elif outcome is Match.EXCLUDED:
                excluded.append(name)
                if (
                    targets is not None
                    and name_matches(name, targets)
                    and name_matches(name, self.saved_modules)
                ):
                    warnings.warn(
                        f"module {name!r} matches target_modules but is in modules_to_save; it is trained in full "
                        "and not adapted",
                        stacklevel=6,
                    )
            else:
                unmatched.append(name)
        self.targeted_parameters = self.tuner._plan_parameters(config, self.model)
        for full in self.targeted_parameters:
            owner = full.rpartition(".")[0]
            if owner in self.targeted:
                raise ValueError(
                    f"Trying to wrap an `nn.Parameter` of layer '{owner}' of type "
                    f"{type(self.model.get_submodule(owner)).__name__}, which is not a valid target. Make sure that "
                    "this layer is not also targeted with `target_modules`."
                )
        self._check_outcome(excluded, unmatched)
        modules = dict(logical_modules(self.model))
        for name in self.targeted:
            self._check_quantized(name, modules[name])
            self.tuner._check_target_module(config, self.adapter_name, name, modules[name])
        self.tuner._check_auxiliary_targets(config, self.adapter_name, self.model, self.saved_modules)

    def _check_quantized(self, name: str, module: nn.Module) -> None:
        """A bitsandbytes layer only for methods whose layers read its weight through
        peftcore.tuners.quantized (`supports_quantized_layers`): others would misread the codes."""
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        kind = quantized_kind(base)
        if kind is not None and not getattr(self.tuner, "supports_quantized_layers", False):
            from peftcore.mapping import PEFT_TYPE_TO_TUNER_MAPPING

            tuners: list[Any] = list(PEFT_TYPE_TO_TUNER_MAPPING.values())
            able = sorted({t.method_name for t in tuners if getattr(t, "supports_quantized_layers", False)})
            raise ValueError(
                f"Target module {name!r} is a bitsandbytes {type(base).__name__} ({kind}), which "
                f"{self.tuner.method_name} cannot adapt (as in HF PEFT, or not yet in peftcore); "
                f"{' and '.join(able)} can. Load the base unquantized, or use one of those"
            )

    def _check_outcome(self, excluded: list[str], unmatched: list[str]) -> None:
        config = self.config
        targets = getattr(config, "target_modules", None)
        target_parameters = getattr(config, "target_parameters", None)
        if not self.targeted and not self.targeted_parameters:
            if excluded and not unmatched:
                raise ValueError(
                    "All modules were excluded. This is likely unintended. Check your `target_modules`, "
                    "`exclude_modules` and `modules_to_save` configuration."
                )
            if not excluded and not targets:
                raise ValueError(
                    "No `target_modules` passed but also no `target_parameters` found. Please check the values "
                    f"for these arguments. target_parameters={target_parameters!r} matched no parameter of the "
                    "model: give parameter names such as 'mlp.experts.gate_up_proj'."
                )
            layers = _layer_notes(config)
            if not excluded:
                raise ValueError(
                    f"Target modules {show_targets(targets)} not found in the base model. Please check the target "
                    f"modules and try again: target_modules={show_targets(targets)} matched no module of "
                    f"{type(self.model).__name__}{layers}. Some of its module names: "
                    f"{', '.join(sample_module_names(self.model))}"
                )
            raise ValueError(
                "No modules were targeted for adaptation. This might be caused by a combination of mismatched "
                "target modules and excluded modules. Please check your `target_modules` and `exclude_modules` "
                "configuration. You may also have only targeted modules that are marked to be saved "
                f"(`modules_to_save`={self.saved_modules}).{layers}"
            )
        exclude = getattr(config, "exclude_modules", None)
        if exclude and not excluded:
            warnings.warn(
                f"You have passed exclude_modules={exclude} but no modules were excluded. Please check that "
                "exclude_modules was set correctly.",
                stacklevel=6,
            )
        elif targets and not self.targeted:
            warnings.warn(
                f"target_modules={targets} were set but no module was matched.", RuntimeWarning, stacklevel=6
            )
        elif target_parameters and not self.targeted_parameters:
            warnings.warn(
                f"target_parameters={target_parameters} were set but no parameter was matched.",
                RuntimeWarning,
                stacklevel=6,
            )
        for attr in ("rank_pattern", "alpha_pattern"):
            patterns = getattr(config, attr, None) or {}
            unused = sorted(
                key
                for key in patterns
                if not any(
                    re.match(rf"(.*\.)?({key})$", name) for name in self.targeted + self.targeted_parameters
                )
            )
            if unused:
                warnings.warn(
                    f"The following {attr} keys did not match any targeted module and were ignored: {unused}.",
                    RuntimeWarning,
                    stacklevel=6,
                )

    # -- phase 2 ----------------------------------------------------------------------------------
    def apply(self) -> None:
        """Wrap the planned targets, then the auxiliary modules."""
        for name in self.targeted:
            parent, child = get_submodule_parent(self.model, name)
            target = getattr(parent, child)
            self.tuner._create_and_replace(
                self.config, self.adapter_name, target, child, parent, current_key=name, **self.layer_kwargs
            )
        self.tuner._inject_parameters(
            self.config, self.adapter_name, self.model, self.targeted_parameters, **self.layer_kwargs
        )
        self.tuner._add_auxiliary_modules(self.config, self.adapter_name, self.model, self.saved_modules)
        self.tuner._after_injection(self.config, self.adapter_name, self.model)

    def rollback(self) -> None:
        """Remove the adapter from every layer and wrapper; unwrap the ones it leaves empty."""
        for name, module in list(self.model.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.delete_adapter(self.adapter_name)
                if not module._all_available_adapter_names() and _still_attached(self.model, name):
                    replace_module(self.model, name, module.unwrapped())  # type: ignore[attr-defined]
            elif isinstance(module, AuxiliaryTrainingWrapper):
                if self.adapter_name in module.adapter_names_held():
                    module.delete_adapter(self.adapter_name)
                if not module.adapter_names_held() and _still_attached(self.model, name):
                    replace_module(self.model, name, module.original_module)


def _still_attached(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _layer_notes(config: PeftConfig) -> str:
    notes = ""
    layers = getattr(config, "layers_to_transform", None)
    pattern = getattr(config, "layers_pattern", None)
    if layers is not None:
        notes += f" (after layers_to_transform={layers!r}"
        notes += f", layers_pattern={pattern!r})" if pattern is not None else ")"
    return notes


def _module_names_in_state_dict(state_dict: dict[str, Any] | None, prefix: str) -> set[str] | None:
    """Module names whose adapter tensors appear in `state_dict` (`<name>.<prefix>...` keys)."""
    if state_dict is None:
        return None
    names = set()
    for key in state_dict:
        key = key.removeprefix("base_model.model.")
        head, sep, _ = key.partition("." + prefix)
        if sep:
            names.add(head)
    return names


def targets_wrapped_module(model: nn.Module, names: list[str]) -> list[str]:
    """The entries of `names` that match a module inside an adapter layer or wrapper (never a target)."""
    hits = []
    logical = {name for name, _ in logical_modules(model)}
    for name, module in model.named_modules():
        if name in logical or is_wrapper(module):
            continue
        if any(name_matches(name, [n]) for n in names):
            hits.append(name)
    return hits
