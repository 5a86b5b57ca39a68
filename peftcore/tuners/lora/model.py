"""`LoraModel`: injects LoRA layers into a transformers model and manages them as a set."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from typing import Any

from torch import nn

from peftcore.constants import LORA_DEFAULT_TARGETS, TASK_HEAD_MODULES
from peftcore.injection import (
    ALL_LINEAR,
    expand_all_linear,
    find_target_names,
    logical_modules,
    replace_module,
    wrap_modules_to_save,
)
from peftcore.modules_to_save import ModulesToSaveWrapper
from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.layer import Linear, LoraLayer, make_lora_layer


class LoraModel(nn.Module):
    """The tuner: `self.model` is the transformers model with LoRA layers swapped in."""

    prefix = "lora_"

    def __init__(
        self,
        model: nn.Module,
        peft_config: LoraConfig | dict[str, LoraConfig],
        adapter_name: str = "default",
        autocast_adapter_dtype: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.peft_config: dict[str, LoraConfig] = {}
        self.active_adapters: list[str] = [adapter_name]
        self.autocast_adapter_dtype = autocast_adapter_dtype
        config = peft_config[adapter_name] if isinstance(peft_config, dict) else peft_config
        self.inject_adapter(adapter_name, config)

    # -- building -------------------------------------------------------------------------------
    def resolve_targets(self, config: LoraConfig) -> str | set[str]:
        """`config.target_modules`, with None and "all-linear" turned into explicit names."""
        targets = config.target_modules
        if targets is None:
            model_type = getattr(getattr(self.model, "config", None), "model_type", None)
            if model_type not in LORA_DEFAULT_TARGETS:
                from peftcore.injection import sample_module_names

                raise ValueError(
                    f"target_modules is not set and model_type={model_type!r} has no default LoRA targets; "
                    f"pass target_modules=[...] (e.g. {sample_module_names(self.model, 6)}) or 'all-linear'"
                )
            return set(LORA_DEFAULT_TARGETS[model_type])
        if targets == ALL_LINEAR:
            return expand_all_linear(self.model, config.task_type)
        return targets if isinstance(targets, str) else set(targets)

    def modules_to_save_for(self, config: LoraConfig) -> list[str]:
        names = list(config.modules_to_save or [])
        task = getattr(config.task_type, "value", config.task_type)
        for head in TASK_HEAD_MODULES.get(str(task), ()):
            if head not in names:
                names.append(head)
        return names

    def inject_adapter(self, adapter_name: str, config: LoraConfig) -> None:
        """Add `adapter_name`: find and validate all targets first, then wrap them."""
        if adapter_name in self.peft_config:
            raise ValueError(
                f"adapter_name={adapter_name!r} already exists; pick a new name or delete it first"
            )
        config = copy.deepcopy(config)  # the caller's object stays as given; resolved values go here
        targets = self.resolve_targets(config)
        save_names = self.modules_to_save_for(config)
        names = find_target_names(
            self.model,
            targets,
            config.exclude_modules,
            config.layers_to_transform,
            config.layers_pattern,
            protected=save_names,
        )
        modules = dict(logical_modules(self.model))
        plans: list[tuple[str, LoraLayer]] = []
        used_fan_in_fan_out: set[bool] = set()
        for name in names:
            module = modules[name]
            if isinstance(module, LoraLayer):
                layer = module
            else:
                layer, _ = make_lora_layer(module, config.fan_in_fan_out, name)
            if isinstance(layer, Linear):  # Linear / Conv1D only: embeddings have no layout
                used_fan_in_fan_out.add(layer.fan_in_fan_out)
            if config.use_dora and not hasattr(layer, "lora_magnitude_vector"):
                raise ValueError(
                    f"use_dora=True is not supported on {type(layer.base_layer).__name__} ({name}); "
                    "DoRA works on Linear and Conv1D layers — exclude this module or set use_dora=False"
                )
            plans.append((name, layer))
        if not config.inference_mode:
            _warn_tied_embedding_targets(self.model, plans)
        # Validation is over; from here on the model is modified.
        if len(used_fan_in_fan_out) == 1:
            config.fan_in_fan_out = used_fan_in_fan_out.pop()  # saved as used (true for GPT-2 Conv1D)
        for name, layer in plans:
            r, alpha = config.rank_and_alpha(name)
            layer.update_layer(
                adapter_name,
                r,
                alpha,
                config.lora_dropout,
                config.init_lora_weights,
                config.use_rslora,
                config.use_dora,
                self.autocast_adapter_dtype,
            )
            if modules[name] is not layer:
                replace_module(self.model, name, layer)
        if config.target_modules is None or config.target_modules == ALL_LINEAR:
            config.target_modules = targets  # saved resolved, so any reader adapts the same modules
        wrap_modules_to_save(self.model, save_names, adapter_name)
        if save_names:
            config.modules_to_save = save_names
        self.peft_config[adapter_name] = config
        self.set_adapter(self.active_adapters)

    # -- iteration ------------------------------------------------------------------------------
    def lora_layers(self) -> Iterator[tuple[str, LoraLayer]]:
        for name, module in self.model.named_modules():
            if isinstance(module, LoraLayer):
                yield name, module

    def saved_modules(self) -> Iterator[tuple[str, ModulesToSaveWrapper]]:
        for name, module in self.model.named_modules():
            if isinstance(module, ModulesToSaveWrapper):
                yield name, module

    # -- adapter selection ----------------------------------------------------------------------
    @property
    def active_adapter(self) -> str:
        return self.active_adapters[0]

    def set_adapter(self, adapter_name: str | list[str]) -> None:
        """Activate adapter(s); only the active ones train (unless their config is inference_mode)."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        for name in names:
            if name not in self.peft_config:
                raise ValueError(f"adapter {name!r} does not exist; available: {sorted(self.peft_config)}")
        self.active_adapters = names
        trainable = not any(self.peft_config[n].inference_mode for n in names)
        for p in self.model.parameters():
            p.requires_grad_(False)
        for _, layer in self.lora_layers():
            layer.set_active_adapters(names, trainable)
        for _, wrapper in self.saved_modules():
            wrapper.set_adapter(names[0], trainable)
        if trainable:
            self._mark_biases_trainable(names)

    def _mark_biases_trainable(self, names: list[str]) -> None:
        for name in names:
            bias = self.peft_config[name].bias
            if bias == "all":
                for pname, p in self.model.named_parameters():
                    if pname.endswith("bias") and ".original_module." not in pname:
                        p.requires_grad_(True)
            elif bias == "lora_only":
                for _, layer in self.lora_layers():
                    if name in layer.r and layer.bias is not None:
                        layer.bias.requires_grad_(True)

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.peft_config:
            raise ValueError(
                f"adapter {adapter_name!r} does not exist; available: {sorted(self.peft_config)}"
            )
        if len(self.peft_config) == 1:
            raise ValueError(f"cannot delete {adapter_name!r}, the only adapter; use unload() to drop LoRA")
        del self.peft_config[adapter_name]
        for _, layer in self.lora_layers():
            layer.delete_adapter(adapter_name)
        for _, wrapper in self.saved_modules():
            wrapper.delete_adapter(adapter_name)
        remaining = [n for n in self.active_adapters if n != adapter_name] or [next(iter(self.peft_config))]
        self.set_adapter(remaining)

    def enable_adapter_layers(self, enabled: bool = True) -> None:
        for _, layer in self.lora_layers():
            if not enabled and layer.merged:
                layer.unmerge()
            layer.disable_adapters = not enabled
        for _, wrapper in self.saved_modules():
            wrapper.disable_adapters = not enabled

    def disable_adapter_layers(self) -> None:
        self.enable_adapter_layers(False)

    # -- merging --------------------------------------------------------------------------------
    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        """Fold the (active or named) adapters into the base weights; the LoRA layers stay."""
        self._check_names(adapter_names)
        for _, layer in self.lora_layers():
            layer.merge(adapter_names, safe_merge=safe_merge)

    def unmerge_adapter(self) -> None:
        for _, layer in self.lora_layers():
            layer.unmerge()

    def merge_and_unload(
        self, progressbar: bool = False, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> nn.Module:
        """Merge, then replace every LoRA layer by its base layer; returns the plain model."""
        self._check_names(adapter_names)
        return self._unload(merge=True, safe_merge=safe_merge, adapter_names=adapter_names)

    def unload(self) -> nn.Module:
        """Remove LoRA without merging (unmerging first if needed); returns the original model."""
        return self._unload(merge=False)

    def _unload(
        self, merge: bool, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> nn.Module:
        for name, layer in list(self.lora_layers()):
            if merge:
                layer.merge(adapter_names, safe_merge=safe_merge)
            else:
                layer.unmerge()
            replace_module(self.model, name, layer.base_layer)
        for name, wrapper in list(self.saved_modules()):
            keep = wrapper.active_module if merge else wrapper.original_module
            replace_module(self.model, name, keep)
        if merge:
            self._record_untied_embeddings()
        return self.model

    def _record_untied_embeddings(self) -> None:
        """A trained copy of a tied head or embedding (modules_to_save) unties it: say so in the
        config, so a saved merged model is not re-tied to the other side's weights on reload."""
        config = getattr(self.model, "config", None)
        get_in = getattr(self.model, "get_input_embeddings", None)
        get_out = getattr(self.model, "get_output_embeddings", None)
        if config is None or not getattr(config, "tie_word_embeddings", False):
            return
        if not callable(get_in) or not callable(get_out):
            return
        emb_in, emb_out = get_in(), get_out()
        if emb_in is not None and emb_out is not None and emb_in.weight is not emb_out.weight:
            warnings.warn(
                "the merged model's input and output embeddings are no longer tied (one of them was "
                "trained in full); setting config.tie_word_embeddings=False",
                stacklevel=4,
            )
            config.tie_word_embeddings = False

    def _check_names(self, adapter_names: list[str] | None) -> None:
        for name in adapter_names or []:
            if name not in self.peft_config:
                raise ValueError(f"adapter {name!r} does not exist; available: {sorted(self.peft_config)}")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __repr__(self) -> str:
        with warnings.catch_warnings():
            return f"LoraModel({self.model!r})"


def _warn_tied_embedding_targets(model: nn.Module, plans: list[tuple[str, LoraLayer]]) -> None:
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    out_weight = getattr(out, "weight", None)
    for name, layer in plans:
        if out_weight is not None and getattr(layer.base_layer, "weight", None) is out_weight:
            warnings.warn(
                f"{name} shares its weight with the output layer (tied embeddings); merging this adapter "
                "changes the output layer too",
                stacklevel=4,
            )
