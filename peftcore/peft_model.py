"""`PeftModel`: a transformers model plus named adapters — train, switch, merge, save, load, push.

Structure (and so every state_dict key) matches HF PEFT: `PeftModel.base_model` is the tuner (e.g.
`LoraModel`) and `PeftModel.base_model.model` the transformers model with adapter layers inside.

`state_dict()` returns the adapter state only (every adapter's tensors, trainable biases and
modules_to_save copies, under in-memory names). Tools that checkpoint through `state_dict()` — the
transformers `Trainer`, Accelerate's `save_state` — so write adapter-only checkpoints and load them
back with `load_state_dict`; the frozen base is never duplicated on disk.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from peftcore.config import PeftConfig
from peftcore.constants import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from peftcore.hub import push_folder_to_hub, write_model_card
from peftcore.io import atomic_write_files, safetensors_writer, text_writer
from peftcore.serialization import (
    adapter_key_map,
    get_peft_model_state_dict,
    load_peft_weights,
    set_peft_model_state_dict,
)
from peftcore.tuners import tuner_class_for


def validate_adapter_name(adapter_name: Any) -> str:
    """Adapter names become directory names on save: no separators, no dots-only names."""
    if not isinstance(adapter_name, str) or not adapter_name:
        raise ValueError(f"adapter_name={adapter_name!r} must be a non-empty string, e.g. 'default'")
    if "/" in adapter_name or "\\" in adapter_name or os.sep in adapter_name or adapter_name in (".", ".."):
        raise ValueError(
            f"adapter_name={adapter_name!r} contains a path separator or is a relative path; "
            "adapters are saved to <dir>/<adapter_name>/, so use a plain name such as 'sentiment'"
        )
    if "." in adapter_name:
        raise ValueError(
            f"adapter_name={adapter_name!r} contains '.', which would break state_dict keys; use '_' instead"
        )
    return adapter_name


class PeftModel(nn.Module):
    """A base model with one or more adapters. Use `get_peft_model` or `PeftModel.from_pretrained`."""

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
            raise ValueError(f"{peft_config.peft_type} is not available in this peftcore version")
        tuner = tuner_class_for(peft_config)
        self.base_model = tuner(model, peft_config, adapter_name, autocast_adapter_dtype)

    # -- attribute access -------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        """Fall back to the transformers model (config, generation_config, device, ...)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "__setstate__") or "base_model" not in self._modules:
                raise
        model = self._modules["base_model"].model  # type: ignore[union-attr]
        try:
            return getattr(model, name)
        except AttributeError:
            raise AttributeError(
                f"'{type(self).__name__}' object and its base model '{type(model).__name__}' "
                f"have no attribute '{name}'"
            ) from None

    @property
    def peft_config(self) -> dict[str, PeftConfig]:
        return self.base_model.peft_config

    @property
    def active_adapter(self) -> str:
        return self.base_model.active_adapter

    @property
    def active_adapters(self) -> list[str]:
        return list(self.base_model.active_adapters)

    @property
    def modules_to_save(self) -> set[str] | None:
        names = {n for c in self.peft_config.values() for n in (getattr(c, "modules_to_save", None) or [])}
        return names or None

    def get_base_model(self) -> nn.Module:
        """The transformers model (with adapter layers inside)."""
        return self.base_model.model

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
        return self.get_base_model()(*args, **kwargs)

    def _forward_named(self, **kwargs: Any) -> Any:
        """Call the base model with the named arguments that were actually given."""
        return self.get_base_model()(**{k: v for k, v in kwargs.items() if v is not None})

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.get_base_model().generate(*args, **kwargs)  # type: ignore[operator]

    # -- adapters ---------------------------------------------------------------------------------
    def add_adapter(
        self, adapter_name: str, peft_config: PeftConfig, low_cpu_mem_usage: bool = False
    ) -> None:
        """Add a new adapter (not activated; call `set_adapter` to train or use it)."""
        validate_adapter_name(adapter_name)
        current = next(iter(self.peft_config.values()))
        if peft_config.peft_type != current.peft_type:
            raise ValueError(
                f"cannot add a {peft_config.peft_type} adapter to a model holding {current.peft_type} adapters"
            )
        self.base_model.inject_adapter(adapter_name, peft_config)

    def set_adapter(self, adapter_name: str) -> None:
        self.base_model.set_adapter(adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        self.base_model.delete_adapter(adapter_name)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model without any adapter inside the block (merged adapters are unmerged)."""
        self.base_model.disable_adapter_layers()
        try:
            yield
        finally:
            self.base_model.enable_adapter_layers()

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        self.base_model.merge_adapter(adapter_names, safe_merge=safe_merge)

    def unmerge_adapter(self) -> None:
        self.base_model.unmerge_adapter()

    def merge_and_unload(
        self, progressbar: bool = False, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> nn.Module:
        return self.base_model.merge_and_unload(progressbar, safe_merge, adapter_names)

    def unload(self) -> nn.Module:
        return self.base_model.unload()

    # -- training integrations --------------------------------------------------------------------
    def enable_input_require_grads(self) -> None:
        self.get_base_model().enable_input_require_grads()  # type: ignore[operator]

    def activation_checkpointing_enable(self, *args: Any, **kwargs: Any) -> None:
        """Enable checkpointing on the base model; embeddings' outputs require grad so gradients reach
        adapters inside checkpointed blocks even though the embeddings are frozen."""
        base = self.get_base_model()
        base.activation_checkpointing_enable(*args, **kwargs)  # type: ignore[operator]
        if not getattr(base, "_require_grads_hooks", None):  # transformers may have added them already
            self.enable_input_require_grads()

    def activation_checkpointing_disable(self) -> None:
        base = self.get_base_model()
        base.activation_checkpointing_disable()  # type: ignore[operator]
        if getattr(base, "_require_grads_hooks", None):
            base.disable_input_require_grads()  # type: ignore[operator]

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        self.activation_checkpointing_enable(
            activation_checkpointing_kwargs=gradient_checkpointing_kwargs, **kw
        )

    def _adapter_state_keys(self) -> list[str]:
        keys: dict[str, None] = {}
        for name, config in self.peft_config.items():
            for mem in adapter_key_map(self, name, getattr(config, "bias", "none")).values():
                keys[mem] = None
        return list(keys)

    def state_dict(
        self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False
    ) -> Any:  # type: ignore[override]
        """The adapter state only (all adapters), under in-memory keys. See the module docstring."""
        out: Any = OrderedDict() if destination is None else destination
        params = dict(self.named_parameters(remove_duplicate=False))
        for key in self._adapter_state_keys():
            tensor = params[key]
            out[prefix + key] = tensor if keep_vars else tensor.detach()
        return out

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:  # type: ignore[override]
        """Load adapter state (a full state dict works too); strict checks only adapter keys."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        expected = set(self._adapter_state_keys())
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
        is_main_process: bool = True,
        **kwargs: Any,
    ) -> None:
        """Write each adapter's `adapter_config.json`, `adapter_model.safetensors` and a model card.

        "default" goes to `save_directory/`, any other adapter to `save_directory/<name>/`. Each file
        is written to a temp file and renamed, so a failure leaves the previous adapter intact.
        """
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory={save_directory!r} is a file; pass a directory")
        if not safe_serialization:
            warnings.warn("peftcore writes safetensors only; ignoring safe_serialization=False", stacklevel=2)
        names = list(self.peft_config) if selected_adapters is None else list(selected_adapters)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise ValueError(
                f"selected_adapters {unknown} do not exist; available: {sorted(self.peft_config)}"
            )
        if not is_main_process:
            return
        for name in names:
            out_dir = save_directory if name == "default" else os.path.join(save_directory, name)
            os.makedirs(out_dir, exist_ok=True)
            tensors = get_peft_model_state_dict(self, adapter_name=name)
            config = copy.deepcopy(self.peft_config[name])
            if config.base_model_name_or_path is None:
                config.base_model_name_or_path = self._base_name_or_path()
            config.inference_mode = True
            # Weights and config are committed together: a failure leaves the previous pair intact.
            atomic_write_files(
                {
                    os.path.join(out_dir, SAFETENSORS_WEIGHTS_NAME): safetensors_writer(tensors),
                    os.path.join(out_dir, CONFIG_NAME): text_writer(config.to_json_string()),
                }
            )
            write_model_card(out_dir, config.base_model_name_or_path)

    def _base_name_or_path(self) -> str | None:
        model = self.get_base_model()
        name = getattr(model, "name_or_path", None) or getattr(
            getattr(model, "config", None), "_name_or_path", None
        )
        return name or None

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
        revision: str | None = None,
        subfolder: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> PeftModel:
        """Attach a saved adapter (directory or Hub repo id) to `model`.

        The config and weights are read and checked before `model` is modified; if the weights do not
        fit, the adapter layers are removed again and `model` is left as it was.
        """
        from peftcore.mapping import peft_class_for_task

        validate_adapter_name(adapter_name)
        if config is None:
            config = PeftConfig.from_pretrained(model_id, subfolder=subfolder, revision=revision, token=token)
        weights = load_peft_weights(model_id, subfolder=subfolder, revision=revision, token=token)
        config = copy.deepcopy(config)
        config.inference_mode = not is_trainable
        target = cls if cls is not PeftModel else peft_class_for_task(config.task_type)
        # Wrapping freezes every base parameter; a failed load must give the flags back as well.
        requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        peft_model = target(model, config, adapter_name, autocast_adapter_dtype)
        try:
            peft_model._load_weights(weights, adapter_name)
        except Exception:
            peft_model.base_model.unload()
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
        revision: str | None = None,
        subfolder: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load weights into `adapter_name`, creating it from the saved config if it does not exist."""
        validate_adapter_name(adapter_name)
        config = PeftConfig.from_pretrained(model_id, subfolder=subfolder, revision=revision, token=token)
        weights = load_peft_weights(
            model_id, device=torch_device, subfolder=subfolder, revision=revision, token=token
        )
        created = adapter_name not in self.peft_config
        if created:
            config.inference_mode = not is_trainable
            self.add_adapter(adapter_name, config)
        try:
            missing = self._load_weights(weights, adapter_name)
        except Exception:
            if created:
                self.delete_adapter(adapter_name)
            raise
        if not is_trainable:
            self.eval()
        return _IncompatibleKeys(missing, [])

    def _load_weights(self, weights: dict[str, torch.Tensor], adapter_name: str) -> list[str]:
        missing = set_peft_model_state_dict(self, weights, adapter_name)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            warnings.warn(
                f"adapter {adapter_name!r}: {len(missing)} tensors missing from the file: {shown}",
                stacklevel=3,
            )
        return missing
