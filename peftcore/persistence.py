"""Writing a PeftModel's adapters to disk and loading adapter weights into it; which adapter names can
be written; the in-memory adapter state. The file format itself is FORMAT.md, the key mapping is in
`serialization.py`."""

from __future__ import annotations

import copy
import os
import warnings
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from peftcore.constants import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from peftcore.hub import write_model_card
from peftcore.io import atomic_write_files, safetensors_writer, text_writer
from peftcore.serialization import (
    _prefix_of,
    adapter_key_map,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)

if TYPE_CHECKING:
    from peftcore.peft_model import PeftModel


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
    if hasattr(nn.Module, adapter_name):
        raise ValueError(
            f"adapter_name={adapter_name!r} is the name of an nn.Module attribute, which the per-adapter "
            "ModuleDicts cannot hold; choose another name, e.g. 'adapter_" + adapter_name + "'"
        )
    return adapter_name


def adapter_state_keys(model: PeftModel) -> list[str]:
    """In-memory names of every adapter's tensors (all adapters, trainable biases, saved copies): the
    keys of `PeftModel.state_dict()`."""
    keys: dict[str, None] = {}
    for name, config in model.peft_config.items():
        bias = getattr(config, "bias", "none")
        for mem in adapter_key_map(model, name, bias, _prefix_of(config)).values():
            keys[mem] = None
        if config.is_prompt_learning:
            for mem, _ in model.named_parameters():
                if mem.startswith(f"prompt_encoder.{name}."):
                    keys[mem] = None
    return list(keys)


def save_adapters(
    model: PeftModel,
    save_directory: str | os.PathLike[str],
    selected_adapters: list[str] | None = None,
    save_embedding_layers: bool | Literal["auto"] = "auto",
    is_main_process: bool = True,
    safe_serialization: bool = True,
    path_initial_model_for_weight_conversion: str | os.PathLike[str] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write each adapter's `adapter_config.json`, `adapter_model.safetensors` and model card.

    `state_dict` (in-memory keys): take the tensors from it instead of the parameters — under FSDP the
    full state dict gathered for rank 0, where rank 0's own parameters are only shards.

    "default" goes to `save_directory/`, any other adapter to `save_directory/<name>/`. Weights and
    config are written to temp files and renamed together, so a failure leaves the previous pair intact.
    With `path_initial_model_for_weight_conversion` (the adapter as saved right after `get_peft_model`),
    an adapter whose init rewrote the base weight is written as the equivalent adapter for the
    unmodified base (the method's tuner class does the conversion: `convert_for_initial_model`).

    Raises:
        ValueError: `save_directory` is a file, a selected adapter does not exist, or the conversion
            is asked for a method without one or an initial adapter that is not there.
    """
    directory = os.fspath(save_directory)
    if os.path.isfile(directory):
        raise ValueError(f"save_directory={directory!r} is a file; pass a directory")
    if not safe_serialization:
        warnings.warn("peftcore writes safetensors only; ignoring safe_serialization=False", stacklevel=3)
    names = list(model.peft_config) if selected_adapters is None else list(selected_adapters)
    unknown = [n for n in names if n not in model.peft_config]
    if unknown:
        raise ValueError(f"selected_adapters {unknown} do not exist; available: {sorted(model.peft_config)}")
    converters = _converters(model, names, path_initial_model_for_weight_conversion)
    if not is_main_process:
        return
    for name in names:
        out_dir = directory if name == "default" else os.path.join(directory, name)
        os.makedirs(out_dir, exist_ok=True)
        tensors = get_peft_model_state_dict(
            model, state_dict=state_dict, adapter_name=name, save_embedding_layers=save_embedding_layers
        )
        if state_dict is not None:
            expected = get_peft_model_state_dict(model, adapter_name=name, save_embedding_layers=False)
            missing = sorted(set(expected) - set(tensors))
            if missing:
                raise KeyError(f"state_dict lacks tensors of adapter {name!r}: {missing[:5]}")
        config = copy.deepcopy(model.peft_config[name])
        if name in converters:
            config, tensors = converters[name](
                config, tensors, os.fspath(path_initial_model_for_weight_conversion or "")
            )
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = _base_name_or_path(model)
        config.inference_mode = True
        if config.task_type is None and not config.is_prompt_learning:
            # As HF PEFT: an adapter without a task records its base model's class, which is how
            # AutoPeftModel rebuilds e.g. a WhisperForConditionalGeneration or a ViT classifier.
            base_cls = type(model.get_base_model())
            config.auto_mapping = {
                "base_model_class": base_cls.__name__,
                "parent_library": base_cls.__module__,
            }
        atomic_write_files(
            {
                os.path.join(out_dir, SAFETENSORS_WEIGHTS_NAME): safetensors_writer(tensors),
                os.path.join(out_dir, CONFIG_NAME): text_writer(config.to_json_string()),
            }
        )
        peft_type = str(getattr(config.peft_type, "value", config.peft_type)).lower()
        write_model_card(out_dir, _card_base_model(model), tags=[peft_type])


def _converters(model: PeftModel, names: list[str], initial: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Per adapter name, the method's conversion for `path_initial_model_for_weight_conversion` (checked first)."""
    if initial is None:
        return {}
    from peftcore.mapping import method_for

    path = os.fspath(initial)
    if not os.path.isfile(os.path.join(path, SAFETENSORS_WEIGHTS_NAME)):
        raise ValueError(
            f"path_initial_model_for_weight_conversion={path!r} holds no {SAFETENSORS_WEIGHTS_NAME}: save the adapter "
            "there right after get_peft_model (before training), then pass that directory"
        )
    out = {}
    for name in names:
        config = model.peft_config[name]
        convert = getattr(method_for(config).model_cls, "convert_for_initial_model", None)
        if convert is None:
            raise ValueError(
                f"Passing `path_initial_model_for_weight_conversion` to `save_pretrained` is not supported for "
                f"{config.peft_type} adapters (adapter {name!r}): it converts adapters whose init rewrote the base weight"
            )
        out[name] = convert
    return out


def _card_base_model(model: PeftModel) -> str | None:
    """The model card's `base_model`: the base model's own config name (as HF PEFT), never the adapter
    config's field, so a custom model without a config gets none (local paths are left out too)."""
    config: Any = getattr(model.get_base_model(), "config", None)
    data = config.to_dict() if hasattr(config, "to_dict") else {}
    name = data.get("_name_or_path") if isinstance(data, dict) else None
    return name or None


def _base_name_or_path(model: PeftModel) -> str | None:
    base: Any = model.get_base_model()
    name = getattr(base, "name_or_path", None) or getattr(
        getattr(base, "config", None), "_name_or_path", None
    )
    return name or None


def load_weights(
    model: PeftModel,
    weights: dict[str, torch.Tensor],
    adapter_name: str,
    key_mapping: dict[str, str] | None = None,
    ignore_mismatched_sizes: bool = False,
) -> _IncompatibleKeys:
    """Copy on-disk-keyed `weights` into adapter `adapter_name`; warns about adapter tensors the file lacks.

    Keys of an older model layout are renamed with the base model's `_checkpoint_conversion_mapping`
    unless `key_mapping` is given.
    """
    if key_mapping is None:
        key_mapping = getattr(model.get_base_model(), "_checkpoint_conversion_mapping", None)
    result = set_peft_model_state_dict(
        model, weights, adapter_name, ignore_mismatched_sizes=ignore_mismatched_sizes, key_mapping=key_mapping
    )
    missing = result.missing_keys
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        warnings.warn(
            f"Found missing adapter keys while loading the checkpoint: adapter {adapter_name!r}: "
            f"{len(missing)} tensors missing from the file: {shown}",
            stacklevel=4,
        )
    return result
