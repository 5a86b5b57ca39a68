"""The boundary between in-memory adapter tensors and the HF PEFT key format.

In memory every adapter tensor sits under its adapter name (`...q_proj.lora_A.<name>.weight`); on
disk the name never appears (`...q_proj.lora_A.weight`). One function builds the map between the two
from the model itself, and both saving and loading use it, so they cannot disagree.

| in memory                                         | on disk                         |
|---------------------------------------------------|---------------------------------|
| `<path>.lora_A.<name>.weight`                     | `<path>.lora_A.weight`          |
| `<path>.lora_embedding_A.<name>`                  | `<path>.lora_embedding_A`       |
| `<path>.lora_magnitude_vector.<name>`             | `<path>.lora_magnitude_vector`  |
| `<path>.modules_to_save.<name>.<param>`           | `<path>.<param>`                |
| `<path>.base_layer.bias` (bias="lora_only"/"all") | unchanged                       |
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from peftcore.constants import SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME
from peftcore.io import load_safetensors, resolve_file
from peftcore.modules_to_save import ModulesToSaveWrapper
from peftcore.tuners.lora.layer import LoraLayer

_NON_TENSOR_CONTAINERS = ("lora_dropout",)


def adapter_key_map(model: nn.Module, adapter_name: str, bias: str = "none") -> dict[str, str]:
    """Map on-disk key → in-memory (state_dict) key for one adapter of a wrapped model.

    `model` is the PeftModel (keys start with `base_model.model.`) or any module containing the
    adapter layers; keys are relative to it.
    """
    mapping: dict[str, str] = {}
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, LoraLayer) and adapter_name in module.r:
            for container in module.adapter_containers:
                if container in _NON_TENSOR_CONTAINERS:
                    continue
                box = getattr(module, container)
                if adapter_name not in box:
                    continue
                entry = box[adapter_name]
                if isinstance(entry, nn.Parameter):
                    mapping[f"{prefix}{container}"] = f"{prefix}{container}.{adapter_name}"
                else:
                    for pname, _ in entry.named_parameters():
                        mapping[f"{prefix}{container}.{pname}"] = (
                            f"{prefix}{container}.{adapter_name}.{pname}"
                        )
            if bias == "lora_only" and module.bias is not None:
                mapping[f"{prefix}base_layer.bias"] = f"{prefix}base_layer.bias"
        elif isinstance(module, ModulesToSaveWrapper) and adapter_name in module.modules_to_save:
            for pname, _ in module.modules_to_save[adapter_name].named_parameters():
                mapping[f"{prefix}{pname}"] = f"{prefix}modules_to_save.{adapter_name}.{pname}"
    if bias == "all":
        for pname, _ in model.named_parameters():
            if (
                pname.endswith("bias")
                and ".modules_to_save." not in pname
                and ".original_module." not in pname
            ):
                mapping.setdefault(pname, pname)
    return mapping


def get_peft_model_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None, adapter_name: str = "default"
) -> dict[str, torch.Tensor]:
    """The tensors of one adapter under their on-disk keys."""
    config = model.peft_config[adapter_name]  # type: ignore[index]
    mapping = adapter_key_map(model, adapter_name, getattr(config, "bias", "none"))
    if state_dict is None:
        params = dict(model.named_parameters(remove_duplicate=False))
        return {disk: params[mem] for disk, mem in mapping.items()}
    return {disk: state_dict[mem] for disk, mem in mapping.items() if mem in state_dict}


def set_peft_model_state_dict(
    model: nn.Module, peft_model_state_dict: dict[str, torch.Tensor], adapter_name: str = "default"
) -> list[str]:
    """Copy on-disk-keyed tensors into the adapter; returns the adapter keys the file lacked.

    Raises:
        ValueError: a tensor's shape does not fit the model (names the key and both shapes).
    """
    config = model.peft_config[adapter_name]  # type: ignore[index]
    mapping = adapter_key_map(model, adapter_name, getattr(config, "bias", "none"))
    extra, redundant = _hf_peft_extras(model, adapter_name, set(peft_model_state_dict))
    missing = sorted(set(mapping) - set(peft_model_state_dict))
    mapping.update(extra)
    params = dict(model.named_parameters(remove_duplicate=False))
    unexpected = sorted(set(peft_model_state_dict) - set(mapping) - redundant)
    for disk_key, tensor in peft_model_state_dict.items():
        if disk_key not in mapping:
            continue
        target = params[mapping[disk_key]]
        if tuple(target.shape) != tuple(tensor.shape):
            raise ValueError(
                f"adapter tensor {disk_key!r} has shape {tuple(tensor.shape)} but the model expects "
                f"{tuple(target.shape)}; the adapter was trained for a different base model or config "
                "(check base_model_name_or_path, r / rank_pattern and num_labels)"
            )
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else "")
        warnings.warn(
            f"{len(unexpected)} adapter tensors match no module of the model and were ignored: {shown}",
            stacklevel=2,
        )
    with torch.no_grad():
        for disk_key, tensor in peft_model_state_dict.items():
            if disk_key in mapping:
                target = params[mapping[disk_key]]
                if target.device.type == "meta":
                    # Materialise a parameter created on the meta device from the file's data. `.data`
                    # cannot move a tensor off meta, so the Parameter itself is replaced in its parent.
                    _replace_parameter(model, mapping[disk_key], tensor.to(dtype=target.dtype), target)
                else:
                    target.copy_(tensor.to(device=target.device, dtype=target.dtype))
    return missing


def _hf_peft_extras(
    model: nn.Module, adapter_name: str, disk_keys: set[str]
) -> tuple[dict[str, str], set[str]]:
    """Keys HF PEFT writes beyond the adapter itself: (those to load, those to drop silently).

    - `<path>.base_layer.weight` of a LoRA-wrapped `embed_tokens` / `lm_head`: HF PEFT saves the
      full base weight so a resized vocabulary travels with the adapter; it loads into the base layer.
    - `<path>.original_module.*` / `<path>.modules_to_save.*` of a saved module: with bias="all",
      HF PEFT also writes the biases inside the wrapper; they duplicate `<path>.bias`.
    """
    load: dict[str, str] = {}
    drop: set[str] = set()
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, LoraLayer) and adapter_name in module.r:
            key = f"{prefix}base_layer.weight"
            if key in disk_keys:
                load[key] = key
        elif isinstance(module, ModulesToSaveWrapper):
            inner = (f"{prefix}original_module.", f"{prefix}modules_to_save.")
            drop.update(k for k in disk_keys if k.startswith(inner))
    return load, drop


def _replace_parameter(model: nn.Module, key: str, data: torch.Tensor, old: nn.Parameter) -> None:
    parent_name, _, leaf = key.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    param = nn.Parameter(data, requires_grad=old.requires_grad)
    if isinstance(parent, nn.ParameterDict):
        parent[leaf] = param
    else:
        setattr(parent, leaf, param)


def load_peft_weights(
    model_id: str | os.PathLike[str],
    device: str | torch.device | None = None,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> dict[str, torch.Tensor]:
    """Read adapter weights from a directory or Hub repo, preferring safetensors.

    A legacy `adapter_model.bin` is read with `torch.load(weights_only=True)` only.
    """
    device = device or "cpu"
    path = resolve_file(model_id, SAFETENSORS_WEIGHTS_NAME, subfolder, revision, token, required=False)
    if path:
        return load_safetensors(path, device)
    path = resolve_file(model_id, WEIGHTS_NAME, subfolder, revision, token, required=False)
    if not path:
        raise FileNotFoundError(
            f"no {SAFETENSORS_WEIGHTS_NAME} (or legacy {WEIGHTS_NAME}) found in {os.fspath(model_id)!r}"
            + (f" subfolder {subfolder!r}" if subfolder else "")
        )
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} could not be read as a weights-only checkpoint: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a dict of tensors")
    return loaded
