"""`BaseTuner`: what every adapter-layer method shares once its layers exist.

A method subclasses `BaseTuner`, names its layer class, prefix and default targets, and implements
two hooks: `_check_target_module` (can this module be adapted? — raises before anything changes)
and `_create_and_replace` (wrap it, or add the adapter to an existing wrapper). This class does the
rest: resolving and matching targets (`injection.py`), the auxiliary modules (`modules_to_save`,
trainable tokens), which adapters are active and trainable, deleting, enabling/disabling, merging
and unloading, and mixed-adapter batches.

`self.model` is the user's model with the adapter layers inside; attributes the tuner lacks are
looked up on it, so `peft_model.base_model.layers[0]` reaches the model's own submodules.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, cast

import torch
from torch import nn

from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.config import PeftConfig
from peftcore.injection import replace_module, resolve_target_modules, saved_module_names
from peftcore.tuners import auxiliary_modules, mixed_batch
from peftcore.tuners.base_layer import BaseTunerLayer, as_name_list
from peftcore.tuners.injector import AdapterInjector


class BaseTuner(nn.Module):
    """An adapter-layer method applied to `model`: `peft_config[name]` per adapter, layers inside `model`.

    Class attributes a method sets:
        prefix: the start of its parameter names (e.g. "lora_"); part of the on-disk key format.
        layer_cls: its BaseTunerLayer subclass.
        default_target_modules: model_type → default `target_modules` (a dict shared with constants).
        method_name: a display name for messages (e.g. "LoRA").
        supports_mixed_batch: whether its layers serve `adapter_names=[...]` (one adapter per batch row).
    """

    prefix: ClassVar[str] = ""
    layer_cls: ClassVar[type[BaseTunerLayer]] = BaseTunerLayer
    default_target_modules: ClassVar[dict[str, Any]] = {}
    method_name: ClassVar[str] = "adapter"
    supports_mixed_batch: ClassVar[bool] = False
    # Whether the method's layers read a bitsandbytes base weight as numbers (peftcore.tuners.quantized).
    supports_quantized_layers: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        peft_config: PeftConfig | dict[str, PeftConfig],
        adapter_name: str = "default",
        low_cpu_mem_usage: bool = False,
        state_dict: dict[str, torch.Tensor] | None = None,
        autocast_adapter_dtype: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.peft_config: dict[str, PeftConfig] = {}
        self.targeted_module_names: list[str] = []
        self.targeted_parameter_names: list[str] = []
        self._active_adapter: list[str] = [adapter_name]
        config = peft_config[adapter_name] if isinstance(peft_config, dict) else peft_config
        self.inject_adapter(
            self.model,
            adapter_name,
            config=config,
            autocast_adapter_dtype=autocast_adapter_dtype,
            low_cpu_mem_usage=low_cpu_mem_usage,
            state_dict=state_dict,
        )

    # -- method hooks -----------------------------------------------------------------------------
    def _check_target_module(
        self, config: PeftConfig, adapter_name: str, name: str, module: nn.Module
    ) -> None:
        """Raise (ValueError/TypeError) if `module` cannot take this adapter; must not modify anything."""

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
        """Add `adapter_name` to `target` (wrapping it, or updating an existing adapter layer)."""
        raise NotImplementedError

    def _extra_targets(self, config: PeftConfig) -> list[str]:
        """Module names to adapt beyond what `target_modules` matches (e.g. modules tied to a target)."""
        return []

    def _after_injection(self, config: PeftConfig, adapter_name: str, model: nn.Module) -> None:
        """Called once the adapter's layers and auxiliary modules exist (e.g. to tie adapters)."""

    def _plan_parameters(self, config: PeftConfig, model: nn.Module) -> list[str]:
        """Full names of the parameters (not modules) the adapter targets; none unless a method supports it."""
        return []

    def _inject_parameters(
        self, config: PeftConfig, adapter_name: str, model: nn.Module, names: list[str], **kwargs: Any
    ) -> None:
        """Add the adapter to the parameters `_plan_parameters` returned."""

    def _check_new_adapter_config(self, config: PeftConfig, adapter_name: str) -> None:
        """Reject a config that cannot live beside the adapters already present (before any change)."""
        biased = [name for name, c in self.peft_config.items() if getattr(c, "bias", "none") != "none"]
        if getattr(config, "bias", "none") != "none" and biased:
            raise ValueError(
                f"{type(self).__name__} supports only 1 adapter with bias. When using multiple adapters, set bias "
                f"to 'none' for all adapters: adapter {biased[0]!r} already trains biases, so {adapter_name!r} "
                f"cannot use bias={config.bias!r}"  # type: ignore[attr-defined]
            )

    def _adapter_bias_parameters(self, config: PeftConfig) -> Iterator[nn.Parameter]:
        """The biases an adapter trains besides its own tensors (config.bias "all" / "<prefix>only")."""
        bias = getattr(config, "bias", "none")
        if bias == "all":
            # The wrappers' originals and copies are handled by the wrappers themselves.
            in_wrappers = {id(p) for _, w in self.auxiliary_wrappers() for p in w.parameters()}
            for module in self.model.modules():
                param = module._parameters.get("bias")
                if param is not None and id(param) not in in_wrappers:
                    yield param
        elif bias == f"{self.prefix}only":
            for module in self.model.modules():
                if isinstance(module, self.layer_cls) and module.bias is not None:
                    yield cast(nn.Parameter, module.bias)

    # -- attribute access -------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name == "model" or modules is None or "model" not in modules:
                raise
        return getattr(modules["model"], name)

    # -- injection --------------------------------------------------------------------------------
    def _prepare_adapter_config(self, config: PeftConfig, model: nn.Module) -> PeftConfig:
        """Resolve `target_modules` None (the architecture's default) and "all-linear", in place."""
        return resolve_target_modules(config, model, self.default_target_modules, self.method_name)

    def modules_to_save_for(self, config: PeftConfig) -> list[str]:
        """`config.modules_to_save` plus the task's head (classifier, score, qa_outputs)."""
        return saved_module_names(config)

    def inject_adapter(
        self,
        model: nn.Module,
        adapter_name: str,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        state_dict: dict[str, torch.Tensor] | None = None,
        config: PeftConfig | None = None,
    ) -> None:
        """Add adapter `adapter_name` (config: `config`, or `self.peft_config[adapter_name]`) to `model`.

        Every target is found and checked before the model changes; a failure leaves no trace of the
        adapter.
        """
        if config is None:
            config = self.peft_config[adapter_name]
        elif adapter_name in self.peft_config:
            raise ValueError(
                f"Adapter with name {adapter_name!r} already exists; pick a new name or delete_adapter it first"
            )
        self._check_new_adapter_config(config, adapter_name)
        config = self._prepare_adapter_config(config, model)
        injector = AdapterInjector(
            self, model, config, adapter_name, low_cpu_mem_usage, autocast_adapter_dtype
        )
        injector.plan(state_dict)
        self.peft_config[adapter_name] = config
        try:
            injector.apply()
        except BaseException:
            del self.peft_config[adapter_name]
            injector.rollback()
            raise
        for name in injector.targeted:
            if name not in self.targeted_module_names:
                self.targeted_module_names.append(name)
        for name in injector.targeted_parameters:
            if name not in self.targeted_parameter_names:
                self.targeted_parameter_names.append(name)
        model.__dict__["peft_config"] = self.peft_config
        self._keep_base_biases(config)
        # The base is frozen once, when the first adapter arrives; later adapters leave alone what the
        # user unfroze since (a layer norm, the head) — as do set_adapter and enable_adapter_layers.
        self._refresh_trainable(freeze_base=not getattr(self, "_base_frozen", False))
        self._base_frozen = True

    # -- auxiliary modules (trained in full or in part beside the adapter) ---------------------------
    def _check_auxiliary_targets(
        self, config: PeftConfig, adapter_name: str, model: nn.Module, saved_modules: list[str]
    ) -> None:
        """Refuse modules_to_save / trainable-token targets that cannot be wrapped (before any change)."""
        auxiliary_modules.check_targets(config, adapter_name, model, saved_modules)

    def _add_auxiliary_modules(
        self, config: PeftConfig, adapter_name: str, model: nn.Module, saved_modules: list[str]
    ) -> None:
        """Wrap the adapter's modules_to_save and trainable tokens."""
        auxiliary_modules.add(config, adapter_name, model, saved_modules)

    # -- iteration --------------------------------------------------------------------------------
    def tuner_layers(self) -> Iterator[tuple[str, BaseTunerLayer]]:
        for name, module in self.model.named_modules():
            if isinstance(module, BaseTunerLayer):
                yield name, module

    def auxiliary_wrappers(self) -> Iterator[tuple[str, AuxiliaryTrainingWrapper]]:
        for name, module in self.model.named_modules():
            if isinstance(module, AuxiliaryTrainingWrapper):
                yield name, module

    # -- active adapters and gradients --------------------------------------------------------------
    @property
    def active_adapters(self) -> list[str]:
        return list(self._active_adapter)

    @property
    def active_adapter(self) -> str | list[str]:
        """The active adapter's name; a list when several are active."""
        names = self.active_adapters
        return names[0] if len(names) == 1 else names

    def _inference_mode(self, names: Sequence[str]) -> bool:
        return any(self.peft_config[n].inference_mode for n in names if n in self.peft_config)

    def _refresh_trainable(self, freeze_base: bool = False) -> None:
        """Let the active adapters (and their biases) train unless in inference mode, the others not;
        with `freeze_base`, freeze every other parameter of the model first."""
        names = self.active_adapters
        if freeze_base:
            for param in self.model.parameters():
                param.requires_grad_(False)
        self._apply_adapter(names, self._inference_mode(names), unmerge=False)

    def _apply_adapter(self, names: list[str], inference_mode: bool, unmerge: bool = True) -> None:
        wrappers = [w for _, w in self.auxiliary_wrappers()]
        for wrapper in wrappers:  # the only step that can refuse: run it before anything changes
            wrapper.check_set_adapter(names)
        for _, layer in self.tuner_layers():
            if unmerge and layer.merged:
                warnings.warn(
                    "Adapter cannot be set when the model is merged. Unmerging the model first.", stacklevel=4
                )
                layer.unmerge()  # type: ignore[attr-defined]
            layer.set_adapter(names, inference_mode=inference_mode)
        for wrapper in wrappers:
            wrapper.set_adapter(names, inference_mode=inference_mode)
        self._active_adapter = list(names)
        if not inference_mode:
            for name in names:
                for param in self._adapter_bias_parameters(self.peft_config[name]):
                    param.requires_grad_(True)

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        """Activate adapter(s): only they run (their outputs add up) and train, unless `inference_mode`.

        Raises:
            ValueError: an unknown adapter, or two active adapters training the same module in full.
        """
        names = as_name_list(adapter_name)
        for name in names:
            if name not in self.peft_config:
                raise ValueError(f"Adapter {name} not found; available: {sorted(self.peft_config)}")
        self._apply_adapter(names, inference_mode or self._inference_mode(names))

    def set_requires_grad(self, adapter_names: str | Sequence[str], requires_grad: bool = True) -> None:
        """Switch gradients of the named adapters on or off without changing which are active."""
        names = as_name_list(adapter_names)
        for name in names:
            if name not in self.peft_config:
                raise ValueError(f"Adapter {name} not found; available: {sorted(self.peft_config)}")
        for _, layer in self.tuner_layers():
            layer.set_requires_grad(names, requires_grad)
        for _, wrapper in self.auxiliary_wrappers():
            wrapper.set_requires_grad(names, requires_grad)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter. If it was active, the other active ones (or the first remaining) take over.

        Raises:
            ValueError: the adapter does not exist, or is merged into the base weights.
        """
        if adapter_name not in self.peft_config:
            raise ValueError(f"Adapter {adapter_name} does not exist; available: {sorted(self.peft_config)}")
        if any(adapter_name in layer.merged_adapters for _, layer in self.tuner_layers()):
            raise ValueError(
                f"Cannot delete adapter(s) {[adapter_name]} while they are merged. Please unmerge them first."
            )
        del self.peft_config[adapter_name]
        remaining = [name for name in self.active_adapters if name != adapter_name]
        if not remaining and self.peft_config:
            remaining = [next(iter(self.peft_config))]
        for _, layer in self.tuner_layers():
            layer.delete_adapter(adapter_name)
        for _, wrapper in self.auxiliary_wrappers():
            wrapper.delete_adapter(adapter_name)
        # Merged adapters stay merged: only the active set (and which tensors train) follows the deletion.
        self._apply_adapter(remaining, self._inference_mode(remaining), unmerge=False)

    # -- enabling ---------------------------------------------------------------------------------
    def _set_adapter_layers(self, enabled: bool) -> None:
        for _, layer in self.tuner_layers():
            layer.enable_adapters(enabled)
        for _, wrapper in self.auxiliary_wrappers():
            wrapper.enable_adapters(enabled)

    def enable_adapter_layers(self) -> None:
        """Turn the adapters back on (after `disable_adapter_layers`)."""
        self._set_adapter_layers(True)
        # The trained biases come back.
        trained = self.__dict__.setdefault("_trained_biases", {})
        with torch.no_grad():
            for param, value in trained.values():
                param.copy_(value)
        trained.clear()
        self._refresh_trainable()

    def disable_adapter_layers(self) -> None:
        """Run the base model alone: adapters off (merged ones are unmerged on the next forward).

        Biases an adapter trains (`bias="all"` / `"lora_only"`) are base parameters, so switching the
        adapter layers off would leave them trained; their values from before the first adapter are put
        back until `enable_adapter_layers` (HF PEFT only warns), so a reference pass (DPO and the like)
        really is the base model.
        """
        originals = self.__dict__.setdefault("_base_biases", {})
        trained = self.__dict__.setdefault("_trained_biases", {})
        self._set_adapter_layers(False)
        with torch.no_grad():
            for name in self.active_adapters:
                for param in self._adapter_bias_parameters(self.peft_config[name]):
                    param.requires_grad_(False)
                    if id(param) in originals and id(param) not in trained:
                        trained[id(param)] = (param, param.detach().clone())
                        param.copy_(originals[id(param)][1])

    def _keep_base_biases(self, config: PeftConfig) -> None:
        """Copy the biases `config` trains as they are before any adapter changed them (once each)."""
        originals = self.__dict__.setdefault("_base_biases", {})
        for param in self._adapter_bias_parameters(config):
            if id(param) not in originals:
                originals[id(param)] = (param, param.detach().clone())

    # -- merging ----------------------------------------------------------------------------------
    def _check_names(self, adapter_names: Sequence[str] | None) -> None:
        for name in adapter_names or []:
            if name not in self.peft_config:
                raise ValueError(f"Adapter {name} does not exist; available: {sorted(self.peft_config)}")

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        """Fold the (active or named) adapters into the base weights; the adapter layers stay."""
        self._check_names(adapter_names)
        layers = [layer for _, layer in self.tuner_layers()]
        pending = [layer.adapters_to_merge(adapter_names) for layer in layers]
        if layers and not any(pending) and any(layer.merged for layer in layers):
            warnings.warn("All adapters are already merged, nothing to do.", UserWarning, stacklevel=3)
            return
        for layer, names in zip(layers, pending, strict=True):
            if names:
                layer.merge(safe_merge=safe_merge, adapter_names=names)  # type: ignore[attr-defined]

    def unmerge_adapter(self) -> None:
        """Take every merged adapter back out of the base weights."""
        for _, layer in self.tuner_layers():
            layer.unmerge()  # type: ignore[attr-defined]

    def merge_and_unload(
        self, progressbar: bool = False, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> nn.Module:
        """Merge, then replace every adapter layer by its base layer; returns the plain model."""
        self._check_names(adapter_names)
        return self._unload_and_optionally_merge(True, safe_merge, adapter_names, progressbar)

    def unload(self) -> nn.Module:
        """Remove the adapters without merging (unmerging first if needed); returns the original model."""
        return self._unload_and_optionally_merge(False)

    def _unload_and_optionally_merge(
        self,
        merge: bool,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
        progressbar: bool = False,
    ) -> nn.Module:
        from tqdm.auto import tqdm

        all_layers = list(self.tuner_layers())
        desc = "Merging adapters" if merge else "Unloading adapters"
        # every merge first: a broken adapter (safe_merge) leaves the model wrapped
        for _, layer in tqdm(all_layers, desc=desc, disable=not progressbar):
            if merge:
                layer.merge(safe_merge=safe_merge, adapter_names=adapter_names)  # type: ignore[attr-defined]
            else:
                layer.unmerge()  # type: ignore[attr-defined]
        wrappers = [name for name, _ in self.auxiliary_wrappers()]
        outermost = [
            (name, layer)
            for name, layer in all_layers
            if not _nested_in(name, iter(all_layers)) and not any(name.startswith(w + ".") for w in wrappers)
        ]
        for name, layer in outermost:
            replace_module(self.model, name, layer.unwrapped())
        for name, wrapper in list(self.auxiliary_wrappers()):
            replace_module(self.model, name, wrapper.unwrapped(merge, adapter_names))
        self.model.__dict__.pop("peft_config", None)
        if merge:
            auxiliary_modules.record_untied_embeddings(self.model)
        return self.model

    # -- saving -----------------------------------------------------------------------------------
    def adapter_tensors_to_save(
        self, adapter_name: str, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The on-disk tensors of `adapter_name` as written; a method whose file holds less than its
        layers do (e.g. only the ranks still in use) trims them here."""
        return tensors

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    @contextlib.contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        """Pass `adapter_names` (one per batch row; "__base__" for none) to every adapter layer."""
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is not None:
            self._check_mixed_batch(list(adapter_names))
        with mixed_batch.adapter_names_passed(self.model, adapter_names):
            yield

    def _check_mixed_batch(self, adapter_names: list[str]) -> None:
        """Raise if these per-row adapter names cannot be served (a method adds its own conditions)."""
        if not self.supports_mixed_batch:
            raise ValueError(
                f"adapter_names={adapter_names!r}: mixed-adapter batches are not supported by {self.method_name}; "
                "run one batch per adapter instead (set_adapter(name), then call the model)"
            )
        mixed_batch.check(self, adapter_names)

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """Float32 adapter weights for `adapter_name` on a half-precision base (no-op when not autocasting)."""
        if not autocast_adapter_dtype:
            return
        for _, layer in self.tuner_layers():
            for attr in layer.adapter_layer_names:
                box = getattr(layer, attr, None)
                if box is None or adapter_name not in box:
                    continue
                entry = box[adapter_name]
                params = [entry] if isinstance(entry, nn.Parameter) else list(entry.parameters())
                for p in params:
                    if p.dtype in (torch.float16, torch.bfloat16):
                        p.data = p.data.float()


def _nested_in(name: str, layers: Iterator[tuple[str, BaseTunerLayer]]) -> bool:
    return any(name != other and name.startswith(other + ".") for other, _ in layers)
