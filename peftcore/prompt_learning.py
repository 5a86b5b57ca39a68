"""The prompt-learning adapters of a `PeftModel`: what `BaseTuner` is for adapter-layer methods.

A prompt-learning `PeftModel` keeps the transformers model unchanged as `base_model` and one encoder
per adapter in `prompt_encoder` (HF PEFT's layout, hence its state_dict keys). `PromptLearningTuner`
is the object the PeftModel delegates adapter management to: adding (config filled from the model,
the task's head in `modules_to_save`), switching, freezing, deleting, disabling. How the virtual
tokens enter a forward pass or `generate` is in `prompt_forward.py`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any, cast

from torch import nn

from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.config import PeftConfig
from peftcore.injection import replace_module, saved_module_names
from peftcore.mapping import method_for
from peftcore.tuners import auxiliary_modules
from peftcore.tuners.base_layer import as_name_list
from peftcore.tuners.prompt import BasePromptEncoder, PromptLearningConfig


def input_embeddings(model: nn.Module) -> nn.Module | None:
    """The model's token embedding (`get_input_embeddings()`), or None for a model without one."""
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        with contextlib.suppress(NotImplementedError):
            return cast(nn.Module | None, getter())
    return None


def takes_a_cache(model: nn.Module) -> bool:
    """Does the model's forward take an attention cache (`cache`, or `past_key_values` before transformers 5)?
    A model without a forward of its own has nothing to inspect and is not refused (HF PEFT checks at the
    first forward, which such a model cannot run anyway)."""
    if type(model).forward is nn.Module.forward:
        return True
    params = inspect.signature(model.forward).parameters
    return "cache" in params or "past_key_values" in params


def uses_gradient_checkpointing(model: nn.Module) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def _peft_type(config: PeftConfig) -> str:
    return str(getattr(config.peft_type, "value", config.peft_type))


class PromptLearningTuner:
    """Adapter management for prompt learning. `model` is the transformers model (left unchanged apart
    from modules_to_save wrappers); `prompt_encoder` is the PeftModel's ModuleDict of encoders."""

    method_name = "prompt learning"

    def __init__(self, model: nn.Module, prompt_encoder: nn.ModuleDict) -> None:
        self.model = model
        self.prompt_encoder = prompt_encoder
        self.peft_config: dict[str, PeftConfig] = {}
        self._active_adapter: list[str] = []
        self.disabled = False
        self.word_embeddings = input_embeddings(model)

    # -- state ------------------------------------------------------------------------------------
    @property
    def active_adapters(self) -> list[str]:
        return list(self._active_adapter)

    @property
    def active_adapter(self) -> str:
        return self._active_adapter[0]

    def active_config(self) -> PromptLearningConfig:
        return cast(PromptLearningConfig, self.peft_config[self.active_adapter])

    def active_encoder(self) -> BasePromptEncoder:
        return cast(BasePromptEncoder, self.prompt_encoder[self.active_adapter])

    def auxiliary_wrappers(self) -> Iterator[tuple[str, AuxiliaryTrainingWrapper]]:
        for name, module in self.model.named_modules():
            if isinstance(module, AuxiliaryTrainingWrapper):
                yield name, module

    # -- adding -----------------------------------------------------------------------------------
    def inject_adapter(
        self,
        model: nn.Module,
        adapter_name: str,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        config: PeftConfig | None = None,
    ) -> None:
        """Add adapter `adapter_name`: fill its config from the model, build its encoder, wrap the
        modules it trains in full. Every check runs before anything changes.

        Raises:
            ValueError: the name exists, the config lacks a task type, prefix tuning meets gradient
                checkpointing, or a dimension cannot be read from the model.
        """
        if config is None or adapter_name in self.peft_config:
            raise ValueError(
                f"Adapter with name {adapter_name!r} already exists; pick a new name or delete_adapter it first"
            )
        prompt_config = cast(PromptLearningConfig, config)
        encoder_cls = cast(Any, method_for(prompt_config).model_cls)
        if prompt_config.task_type is None:
            raise ValueError(
                f"{type(config).__name__} needs task_type: prompt learning rewrites the inputs of a task model; "
                "pass e.g. task_type='CAUSAL_LM', 'SEQ_2_SEQ_LM', 'SEQ_CLS' or 'TOKEN_CLS'"
            )
        if encoder_cls.injects == "cache" and uses_gradient_checkpointing(self.model):
            raise ValueError(
                f"{type(config).__name__}: {_peft_type(config)} does not work with gradient checkpointing (the "
                "checkpointed layers are recomputed without the prefix cache). Call "
                "model.gradient_checkpointing_disable() before get_peft_model, or use prompt tuning"
            )
        if encoder_cls.injects == "cache" and not takes_a_cache(self.model):
            raise ValueError(
                f"{type(config).__name__}: Model does not support past key values which are required for prefix "
                f"tuning: {type(self.model).__name__}.forward takes no `cache` / `past_key_values` (an encoder-only "
                "model has no attention cache); use prompt tuning or P-tuning (PromptTuningConfig, "
                "PromptEncoderConfig) for it"
            )
        model_config = getattr(self.model, "config", None)
        if model_config is not None:
            prompt_config.fill_from_model_config(model_config)
        elif None in (prompt_config.token_dim, prompt_config.num_layers, prompt_config.num_attention_heads):
            raise ValueError(
                "the base model has no config to read token_dim, num_layers and num_attention_heads from; set "
                f"them in the {type(config).__name__}"
            )
        if prompt_config.num_transformer_submodules is None:
            task = getattr(prompt_config.task_type, "value", prompt_config.task_type)
            prompt_config.num_transformer_submodules = 2 if task == "SEQ_2_SEQ_LM" else 1
        saved = saved_module_names(prompt_config)
        auxiliary_modules.check_targets(prompt_config, adapter_name, self.model, saved)
        if encoder_cls.needs_word_embeddings:
            encoder = encoder_cls(prompt_config, self.word_embeddings)
        else:
            encoder = encoder_cls(prompt_config)
        weight = next(iter(self.model.parameters()), None)
        if weight is not None:
            encoder.to(weight.device)
        self.peft_config[adapter_name] = prompt_config
        self.prompt_encoder[adapter_name] = encoder
        auxiliary_modules.add(prompt_config, adapter_name, self.model, saved)
        for param in self.model.parameters():
            param.requires_grad_(False)
        if not self._active_adapter:
            self._active_adapter = [adapter_name]
        self._apply(self.active_adapters)
        if adapter_name not in self._active_adapter:
            self.set_requires_grad(adapter_name, False)

    # -- switching --------------------------------------------------------------------------------
    def _apply(self, names: list[str]) -> None:
        inference = any(self.peft_config[n].inference_mode for n in names)
        for name, encoder in self.prompt_encoder.items():
            encoder.requires_grad_(name in names and not self.peft_config[name].inference_mode)
        for _, wrapper in self.auxiliary_wrappers():
            wrapper.set_adapter(names, inference_mode=inference)
        self._active_adapter = list(names)

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        names = as_name_list(adapter_name)
        if len(names) != 1:
            raise ValueError(
                f"adapter_name={names!r}: prompt learning uses one adapter at a time; activate a single name"
            )
        if names[0] not in self.peft_config:
            raise ValueError(f"Adapter {names[0]} not found; available: {sorted(self.peft_config)}")
        self._apply(names)
        if inference_mode:
            self.set_requires_grad(names, False)

    def set_requires_grad(self, adapter_names: str | Sequence[str], requires_grad: bool = True) -> None:
        for name in as_name_list(adapter_names):
            if name not in self.peft_config:
                raise ValueError(f"Adapter {name} not found; available: {sorted(self.peft_config)}")
            self.prompt_encoder[name].requires_grad_(requires_grad)
            for _, wrapper in self.auxiliary_wrappers():
                wrapper.set_requires_grad([name], requires_grad)

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.peft_config:
            raise ValueError(f"Adapter {adapter_name} does not exist; available: {sorted(self.peft_config)}")
        del self.peft_config[adapter_name]
        del self.prompt_encoder[adapter_name]
        for _, wrapper in self.auxiliary_wrappers():
            if adapter_name in wrapper.adapter_names_held():
                wrapper.delete_adapter(adapter_name)
        remaining = [n for n in self._active_adapter if n != adapter_name] or list(self.peft_config)[:1]
        self._active_adapter = []
        if remaining:
            self._apply(remaining)

    # -- enabling ---------------------------------------------------------------------------------
    def disable_adapter_layers(self) -> None:
        self.disabled = True
        for _, wrapper in self.auxiliary_wrappers():
            wrapper.enable_adapters(False)

    def enable_adapter_layers(self) -> None:
        self.disabled = False
        for _, wrapper in self.auxiliary_wrappers():
            wrapper.enable_adapters(True)
        self._apply(self.active_adapters)

    # -- what layer methods have and prompt learning has not ----------------------------------------
    def _no_weights(self, operation: str) -> ValueError:
        return ValueError(
            f"{operation} is not available for prompt learning: its virtual tokens are inputs, not weights of "
            "the model; keep the PeftModel (or save the adapter) instead"
        )

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        raise self._no_weights("merge_adapter")

    def unmerge_adapter(self) -> None:
        raise self._no_weights("unmerge_adapter")

    def merge_and_unload(self, *args: Any, **kwargs: Any) -> nn.Module:
        raise self._no_weights("merge_and_unload")

    def unload(self) -> nn.Module:
        """The transformers model without the adapters (modules_to_save wrappers replaced by the originals)."""
        for name, wrapper in list(self.auxiliary_wrappers()):
            replace_module(self.model, name, wrapper.unwrapped(False))
        self.peft_config.clear()
        self._active_adapter = []
        return self.model

    @contextlib.contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        if kwargs.get("adapter_names") is not None:
            raise ValueError(
                "adapter_names=...: mixed-adapter batches are not supported by prompt learning; run one batch "
                "per adapter instead (set_adapter(name), then call the model)"
            )
        yield
