"""The base model's own state dict, read from and written into a model that carries adapters.

Adapter layers keep the original module as `base_layer` and auxiliary wrappers keep it as
`original_module`; seen through them, the model has exactly the keys it had before the adapters
were added. That is what these two functions read and write, e.g. to update the base weights of a
PEFT model from a new checkpoint of the base model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.tuners.base_layer import BaseTunerLayer


def _base_model_of(model: nn.Module) -> nn.Module:
    """The user's model inside a PeftModel (or the model itself when adapters were injected)."""
    get = getattr(model, "get_base_model", None)
    return (
        get() if callable(get) and isinstance(model, nn.Module) and "base_model" in model._modules else model
    )


def _base_tensors(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(original key, tensor) of every parameter and persistent buffer, seen through the wrappers."""
    if isinstance(module, BaseTunerLayer):
        yield from _base_tensors(module.base_layer, prefix)
        return
    if isinstance(module, AuxiliaryTrainingWrapper):
        yield from _base_tensors(module.original_module, prefix)
        return
    for name, param in module.named_parameters(recurse=False):
        yield f"{prefix}{name}", param
    persistent = [
        n for n, _ in module.named_buffers(recurse=False) if n not in module._non_persistent_buffers_set
    ]
    for name in persistent:
        buffer = module._buffers[name]
        if buffer is not None:
            yield f"{prefix}{name}", buffer
    for name, child in module.named_children():
        yield from _base_tensors(child, f"{prefix}{name}.")


def get_base_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict under its original keys (no adapter tensors, no wrapper paths)."""
    return {key: tensor.detach() for key, tensor in _base_tensors(_base_model_of(model))}


def set_base_model_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> _IncompatibleKeys:
    """Copy `state_dict` (original keys) into the base model's tensors; adapters are left as they are.

    Raises:
        RuntimeError: `strict` and keys are missing or unexpected (both listed).
    """
    tensors = dict(_base_tensors(_base_model_of(model)))
    missing = sorted(set(tensors) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(tensors))
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"Error(s) in loading the base model state dict: missing keys {missing[:5]}, unexpected keys "
            f"{unexpected[:5]}; pass strict=False to load the matching keys only"
        )
    with torch.no_grad():
        for key, value in state_dict.items():
            if key in tensors:
                tensors[key].copy_(value.to(device=tensors[key].device, dtype=tensors[key].dtype))
    return _IncompatibleKeys(missing, unexpected)
