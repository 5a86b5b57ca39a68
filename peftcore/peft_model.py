"""`PeftModel`: a transformers model plus named adapters — train, switch, merge, save, load, push.

Structure (and so every state_dict key) matches HF PEFT: `PeftModel.base_model` is the tuner (e.g.
`LoraModel`) and `PeftModel.base_model.model` the transformers model with adapter layers inside.
Attributes the PeftModel lacks are looked up on the tuner, then on the transformers model
(`peft_model.config`, `peft_model.lin0`, ...).

`state_dict()` is nn.Module's: the whole model, gathered through every submodule (so FSDP's and
DeepSpeed's state-dict hooks run, and `torch.save(model.state_dict())` holds the base too), as in HF
PEFT. `adapter_state_dict()` picks the adapter entries (every adapter's tensors, trainable biases,
modules_to_save copies, under in-memory names); `load_state_dict` takes either. The transformers
`Trainer` writes adapter-only checkpoints with `peftcore.trainer.AdapterTrainer` (or its mixin).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from peftcore import persistence, prompt_forward
from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.config import PeftConfig
from peftcore.hub import push_folder_to_hub
from peftcore.io import download_kwargs
from peftcore.mapping import method_for
from peftcore.persistence import validate_adapter_name
from peftcore.prompt_learning import PromptLearningTuner
from peftcore.serialization import load_peft_weights
from peftcore.tuners.base import BaseTuner
from peftcore.tuners.base_layer import BaseTunerLayer


def _split_load_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pop from `kwargs` the Hub arguments (subfolder, revision, token and those of hf_hub_download) and
    the loading options (torch_device, ignore_mismatched_sizes, use_safetensors); what is left are
    config overrides."""
    hub: dict[str, Any] = {k: kwargs.pop(k) for k in ("subfolder", "revision", "token") if k in kwargs}
    hub.update(download_kwargs(kwargs))
    load = {
        "torch_device": kwargs.pop("torch_device", None),
        "ignore_mismatched_sizes": kwargs.pop("ignore_mismatched_sizes", False),
        "use_safetensors": kwargs.pop("use_safetensors", None),
    }
    # HF PEFT re-dispatches an offloaded base after loading with these; peftcore creates each adapter on
    # its layer's execution device instead (LoraLayer.update_layer), so there is nothing left for them.
    for key in _DISPATCH_KWARGS:
        kwargs.pop(key, None)
    return hub, load


_DISPATCH_KWARGS = ("device_map", "max_memory", "offload_folder", "offload_index")


class PeftModel(nn.Module):
    """A base model with one or more adapters. Use `get_peft_model` or `PeftModel.from_pretrained`."""

    base_model: BaseTuner
    # transformers' Trainer refuses to train a quantized model that has no adapters; it recognizes HF
    # PEFT's PeftModel by its class and adapters loaded through transformers by this flag. A peftcore
    # PeftModel always carries adapters, so QLoRA trains in the Trainer as it does with HF PEFT.
    _hf_peft_config_loaded = True

    def __init__(
        self,
        model: nn.Module,
        peft_config: PeftConfig,
        adapter_name: str = "default",
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
    ) -> None:
        super().__init__()
        validate_adapter_name(adapter_name)
        if peft_config.is_prompt_learning:
            # HF PEFT's layout: the transformers model itself is `base_model`, one encoder per adapter.
            method_for(peft_config)
            self.base_model = model  # type: ignore[assignment]
            self.prompt_encoder = nn.ModuleDict()
            tuner = PromptLearningTuner(model, self.prompt_encoder)
            self.__dict__["_prompt_tuner"] = tuner
            tuner.inject_adapter(model, adapter_name, config=peft_config)
            return
        tuner_cls: Any = method_for(peft_config).model_cls
        self.base_model = tuner_cls(
            model,
            {adapter_name: peft_config},
            adapter_name,
            low_cpu_mem_usage=low_cpu_mem_usage,
            autocast_adapter_dtype=autocast_adapter_dtype,
        )

    @property
    def _is_prompt_learning(self) -> bool:
        return self.__dict__.get("_prompt_tuner") is not None

    @property
    def _tuner(self) -> Any:
        """What manages the adapters: the BaseTuner (`base_model`), or the prompt-learning tuner."""
        return self.__dict__.get("_prompt_tuner") or self.base_model

    # -- attribute access -------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        """Fall back to the tuner and through it to the transformers model (config, device, submodules)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name == "base_model" or modules is None or "base_model" not in modules:
                raise
        return getattr(modules["base_model"], name)

    @property
    def peft_config(self) -> dict[str, PeftConfig]:
        return self._tuner.peft_config  # type: ignore[no-any-return]

    @property
    def active_adapter(self) -> str:
        """The active adapter (the first one when several are active: see `active_adapters`)."""
        names = self._tuner.active_adapters
        return names[0] if names else ""

    @property
    def active_adapters(self) -> list[str]:
        return list(self._tuner.active_adapters)

    @property
    def active_peft_config(self) -> PeftConfig:
        return self.peft_config[self.active_adapters[0]]

    @property
    def peft_type(self) -> Any:
        return self.active_peft_config.peft_type

    @property
    def modules_to_save(self) -> set[str] | None:
        names = {n for c in self.peft_config.values() for n in (getattr(c, "modules_to_save", None) or [])}
        return names or None

    def get_base_model(self) -> nn.Module:
        """The transformers model (with adapter layers inside)."""
        return self._tuner.model  # type: ignore[no-any-return]

    # -- counting ---------------------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts; "all" includes the adapters."""
        trainable = total = 0
        for p in self.parameters():
            n = p.numel()
            total += n
            if p.requires_grad:
                trainable += n
        return trainable, total

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        )

    # -- forward / generate -----------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The base model's forward; `adapter_names=[...]` (one per row) mixes adapters in one batch.

        With a prompt-learning adapter the inputs are rewritten first (see `prompt_forward.py`).
        """
        with self._tuner._enable_peft_forward_hooks(*args, **kwargs):
            kwargs.pop("adapter_names", None)
            if self._is_prompt_learning:
                if args:
                    kwargs.setdefault("input_ids", args[0])
                return prompt_forward.forward(self._tuner, kwargs)
            return self.base_model(*args, **kwargs)

    def _forward_named(self, **kwargs: Any) -> Any:
        """Call the base model with the named arguments that were actually given."""
        return PeftModel.forward(self, **{k: v for k, v in kwargs.items() if v is not None})

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The base model's `generate`; prompt-learning adapters need `input_ids` (see `prompt_forward.py`)."""
        with self._tuner._enable_peft_forward_hooks(*args, **kwargs):
            kwargs.pop("adapter_names", None)
            if self._is_prompt_learning:
                return prompt_forward.generate(self._tuner, args, kwargs)
            return self.get_base_model().generate(*args, **kwargs)  # type: ignore[operator]

    # -- prompt learning --------------------------------------------------------------------------
    def _prompt_encoder_of(self, adapter_name: str, operation: str) -> Any:
        if not self._is_prompt_learning:
            raise ValueError(
                f"{operation} is for prompt-learning adapters (prompt tuning, P-tuning, prefix tuning); this "
                f"model's adapters are {self.peft_type}"
            )
        if adapter_name not in self.prompt_encoder:
            raise ValueError(f"no adapter named {adapter_name!r}; the model has {list(self.prompt_encoder)}")
        return self.prompt_encoder[adapter_name]

    def get_prompt_embedding_to_save(self, adapter_name: str) -> torch.Tensor:
        """The adapter's virtual tokens as saved (`prompt_embeddings`): the encoder's output, detached."""
        return self._prompt_encoder_of(adapter_name, "get_prompt_embedding_to_save").prompt_embeddings()

    def get_prompt(self, batch_size: int, task_ids: torch.Tensor | None = None) -> Any:
        """The active adapter's virtual tokens for a batch: (batch, tokens, dim) embeddings to prepend,
        or, for prefix tuning, the attention cache the model starts from (with gradients, as in training)."""
        if task_ids is not None:
            raise ValueError("task_ids are for multitask prompt tuning, which peftcore does not implement")
        encoder = self._prompt_encoder_of(self.active_adapter, "get_prompt")
        if encoder.injects == "cache":
            return encoder.build_cache(batch_size, self.base_model)
        return encoder.batch_prompts(batch_size)

    # -- adapters ---------------------------------------------------------------------------------
    def add_adapter(
        self,
        adapter_name: str,
        peft_config: PeftConfig,
        low_cpu_mem_usage: bool = False,
        autocast_adapter_dtype: bool = True,
    ) -> None:
        """Add a new adapter (not activated; call `set_adapter` to train or use it).

        Raises:
            ValueError: the name exists already, is not a plain name, or the method differs from the
                model's adapters. The model is unchanged when this raises.
        """
        validate_adapter_name(adapter_name)
        if adapter_name in self.peft_config:
            raise ValueError(
                f"Adapter with name {adapter_name!r} already exists; pick a new name or delete_adapter it first"
            )
        current = next(iter(self.peft_config.values()), None)
        if current is not None and peft_config.peft_type != current.peft_type:
            raise ValueError(
                f"cannot add a {peft_config.peft_type} adapter to a model holding {current.peft_type} adapters; "
                "use one method per PeftModel"
            )
        self._tuner.inject_adapter(
            self.get_base_model(),
            adapter_name,
            config=peft_config,
            autocast_adapter_dtype=autocast_adapter_dtype,
            low_cpu_mem_usage=low_cpu_mem_usage,
        )

    def set_adapter(self, adapter_name: str, inference_mode: bool = False) -> None:
        """Activate `adapter_name` (trainable unless `inference_mode`); the others are frozen and unused."""
        if adapter_name not in self.peft_config:
            raise ValueError(f"Adapter {adapter_name} not found; available: {sorted(self.peft_config)}")
        self._tuner.set_adapter(adapter_name, inference_mode=inference_mode)

    def delete_adapter(self, adapter_name: str) -> None:
        self._tuner.delete_adapter(adapter_name)

    def set_requires_grad(self, adapter_names: str | list[str], requires_grad: bool = True) -> None:
        """Switch gradients of the named adapters on or off (whether active or not)."""
        self._tuner.set_requires_grad(adapter_names, requires_grad=requires_grad)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model without any adapter inside the block (merged adapters are unmerged)."""
        states = {
            m.disable_adapters
            for m in self.modules()
            if isinstance(m, BaseTunerLayer | AuxiliaryTrainingWrapper)
        }
        if len(states) > 1:
            warnings.warn(
                "The model contains some adapter layers that are enabled and others that are disabled. This is most "
                "likely unintentional. After exiting the disable_adapter context, all adapters will be enabled",
                stacklevel=3,
            )
        was_disabled = states == {True}
        # A disabled merged layer unmerges at its next forward; whatever was merged is merged again on
        # the way out, in the same order, so the block leaves the model as it found it.
        merged = {id(layer): list(layer.merged_adapters) for _, layer in self._tuner.tuner_layers()}
        self._tuner.disable_adapter_layers()
        try:
            yield
        finally:
            if not was_disabled:
                self._tuner.enable_adapter_layers()
                for _, layer in self._tuner.tuner_layers():
                    wanted = merged.get(id(layer))
                    if wanted and not layer.merged:
                        cast(Any, layer).merge(adapter_names=wanted)

    def enable_adapter_layers(self) -> None:
        self._tuner.enable_adapter_layers()

    def disable_adapter_layers(self) -> None:
        self._tuner.disable_adapter_layers()

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        self._tuner.merge_adapter(adapter_names, safe_merge=safe_merge)

    def unmerge_adapter(self) -> None:
        self._tuner.unmerge_adapter()

    def merge_and_unload(
        self, progressbar: bool = False, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> nn.Module:
        return self._tuner.merge_and_unload(progressbar, safe_merge, adapter_names)

    def unload(self) -> nn.Module:
        return self._tuner.unload()

    # -- training integrations --------------------------------------------------------------------
    def enable_input_require_grads(self) -> None:
        self.get_base_model().enable_input_require_grads()  # type: ignore[operator]

    def activation_checkpointing_enable(self, *args: Any, **kwargs: Any) -> None:
        """Enable checkpointing on the base model; embeddings' outputs require grad so gradients reach
        adapters inside checkpointed blocks even though the embeddings are frozen."""
        base = self.get_base_model()
        if self._is_prompt_learning and any(e.injects == "cache" for e in self.prompt_encoder.values()):
            raise ValueError(
                "prefix tuning does not work with gradient checkpointing: the checkpointed layers are recomputed "
                "without the prefix cache. Train without gradient checkpointing, or use prompt tuning"
            )
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(*args, **kwargs)  # type: ignore[operator]
        else:  # transformers before the rename (5.0 has only gradient_checkpointing_enable)
            old_kwargs = kwargs.pop("activation_checkpointing_kwargs", None)
            if args:
                old_kwargs = args[0]
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=old_kwargs)  # type: ignore[operator]
        if not getattr(base, "_require_grads_hooks", None):  # transformers may have added them already
            self.enable_input_require_grads()

    def activation_checkpointing_disable(self) -> None:
        base: Any = self.get_base_model()
        disable = (
            getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable
        )
        disable()
        if getattr(base, "_require_grads_hooks", None):
            base.disable_input_require_grads()  # type: ignore[operator]

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        self.activation_checkpointing_enable(
            activation_checkpointing_kwargs=gradient_checkpointing_kwargs, **kw
        )

    def adapter_state_dict(self, state_dict: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The adapter entries (all adapters) of `state_dict` — by default this model's own, gathered
        through its modules' hooks (under FSDP, pass the full state dict the framework gathered)."""
        full = self.state_dict() if state_dict is None else state_dict
        keys = persistence.adapter_state_keys(self)
        missing = [k for k in keys if k not in full]
        if missing:
            raise KeyError(f"the state dict lacks adapter entries {missing[:5]}: is it this model's?")
        return OrderedDict((k, full[k]) for k in keys)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:  # type: ignore[override]
        """Load adapter state (a full state dict works too); strict checks only adapter keys."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        expected = set(persistence.adapter_state_keys(self))
        missing = [k for k in result.missing_keys if k in expected]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"error loading adapter state: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
        return _IncompatibleKeys(missing, result.unexpected_keys)

    # -- saving -----------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        safe_serialization: bool = True,
        selected_adapters: list[str] | None = None,
        save_embedding_layers: bool | Literal["auto"] = "auto",
        is_main_process: bool = True,
        path_initial_model_for_weight_conversion: str | os.PathLike[str] | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        """Write each adapter's `adapter_config.json`, `adapter_model.safetensors` and a model card.

        "default" goes to `save_directory/`, any other adapter to `save_directory/<name>/`. Each file
        is written to a temp file and renamed, so a failure leaves the previous adapter intact.
        `save_embedding_layers` also stores the full embedding weights (see get_peft_model_state_dict).
        `path_initial_model_for_weight_conversion=<dir of the adapter saved right after get_peft_model>`
        writes a PiSSA / OLoRA adapter as a plain LoRA for the unmodified base model. `state_dict`
        (in-memory keys) supplies the tensors, e.g. the full state dict FSDP gathered for rank 0.
        """
        if kwargs:
            raise TypeError(
                f"save_pretrained() got unexpected keyword arguments {sorted(kwargs)}; it takes safe_serialization, "
                "selected_adapters, save_embedding_layers, is_main_process and "
                "path_initial_model_for_weight_conversion, state_dict (push_to_hub uploads)"
            )
        persistence.save_adapters(
            self,
            save_directory,
            selected_adapters,
            save_embedding_layers,
            is_main_process,
            safe_serialization,
            path_initial_model_for_weight_conversion=path_initial_model_for_weight_conversion,
            state_dict=state_dict,
        )

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload adapter",
        revision: str | None = None,
        create_pr: bool = False,
        endpoint: str | None = None,
        selected_adapters: list[str] | None = None,
    ) -> Any:
        """Save to a temp dir and upload it to `repo_id`; returns the `CommitInfo`."""
        return push_folder_to_hub(
            lambda d: self.save_pretrained(d, selected_adapters=selected_adapters),
            repo_id,
            private,
            token,
            commit_message,
            revision,
            create_pr,
            endpoint,
        )

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | os.PathLike[str],
        adapter_name: str = "default",
        is_trainable: bool = False,
        config: PeftConfig | None = None,
        autocast_adapter_dtype: bool = True,
        ephemeral_gpu_offload: bool = False,
        low_cpu_mem_usage: bool = False,
        key_mapping: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> PeftModel:
        """Attach a saved adapter (directory or Hub repo id) to `model`.

        `config` given: the model uses that very object (its `inference_mode` set from `is_trainable`).
        Other keyword arguments: `revision`, `subfolder`, `token`, `torch_device`,
        `ignore_mismatched_sizes`. If the weights do not fit, the adapter layers are removed again and
        `model` is left as it was.
        """
        from peftcore.mapping import peft_class_for_task

        validate_adapter_name(adapter_name)
        hub, load = _split_load_kwargs(kwargs)
        if config is None:
            config = PeftConfig.from_pretrained(model_id, **hub, **kwargs)  # the rest: config overrides
        elif kwargs:
            raise TypeError(
                f"from_pretrained() got unexpected keyword arguments {sorted(kwargs)}; with config= given there "
                "is no saved config for them to override"
            )
        weights = load_peft_weights(
            model_id, device=load["torch_device"], use_safetensors=load["use_safetensors"], **hub
        )
        config.inference_mode = not is_trainable
        if config.is_prompt_learning and is_trainable:
            raise ValueError(
                "Cannot set a prompt learning adapter to trainable when loading pretrained adapter: the file "
                "holds the prompt encoder's output, not its parameters. Load with is_trainable=False, or train "
                "a new adapter with get_peft_model"
            )
        target = cls if cls is not PeftModel else peft_class_for_task(config.task_type)
        # Wrapping freezes every base parameter; a failed load must give the flags back as well.
        requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        peft_model = target(model, config, adapter_name, autocast_adapter_dtype, low_cpu_mem_usage)
        try:
            peft_model._load_weights(weights, adapter_name, key_mapping, load["ignore_mismatched_sizes"])
        except Exception:
            peft_model._tuner.unload()
            for param, flag in requires_grad:
                param.requires_grad_(flag)
            raise
        if not is_trainable:
            peft_model.eval()
        return peft_model

    def load_adapter(
        self,
        model_id: str | os.PathLike[str],
        adapter_name: str,
        is_trainable: bool = False,
        torch_device: str | None = None,
        autocast_adapter_dtype: bool = True,
        ephemeral_gpu_offload: bool = False,
        low_cpu_mem_usage: bool = False,
        key_mapping: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load weights into `adapter_name`, creating it from the saved config if it does not exist.

        Returns the (missing, unexpected) keys of the load, like `nn.Module.load_state_dict`.
        """
        validate_adapter_name(adapter_name)
        hub, load = _split_load_kwargs(kwargs)
        config = PeftConfig.from_pretrained(model_id, **hub, **kwargs)  # the rest: config overrides
        weights = load_peft_weights(
            model_id,
            device=torch_device or load["torch_device"],
            use_safetensors=load["use_safetensors"],
            **hub,
        )
        created = adapter_name not in self.peft_config
        if created and config.is_prompt_learning and is_trainable:
            raise ValueError(
                "Cannot set a prompt learning adapter to trainable when loading pretrained adapter: the file "
                "holds the prompt encoder's output, not its parameters; load it with is_trainable=False"
            )
        if created:
            config.inference_mode = not is_trainable
            self.add_adapter(
                adapter_name,
                config,
                low_cpu_mem_usage=low_cpu_mem_usage,
                autocast_adapter_dtype=autocast_adapter_dtype,
            )
        try:
            result = self._load_weights(weights, adapter_name, key_mapping, load["ignore_mismatched_sizes"])
        except Exception:
            if created:
                self.delete_adapter(adapter_name)
            raise
        if not is_trainable:
            self.eval()
        return result

    def _load_weights(
        self,
        weights: dict[str, torch.Tensor],
        adapter_name: str,
        key_mapping: dict[str, str] | None = None,
        ignore_mismatched_sizes: bool = False,
    ) -> _IncompatibleKeys:
        return persistence.load_weights(self, weights, adapter_name, key_mapping, ignore_mismatched_sizes)
