"""`BaseTunerLayer`: the bookkeeping every adapter layer shares, whatever its method.

An adapter layer wraps one module of the base model (`base_layer`) and keeps, per adapter name, its own
tensors in containers named by `adapter_layer_names` (e.g. LoRA's `lora_A`, `lora_B`) and its own
settings in dicts named by `other_param_names` (e.g. `r`, `scaling`). Everything here works only
through those two tuples, so a method declares its containers and inherits adapter selection,
enabling/disabling, gradient switching and deletion.

This is a plain class, not an `nn.Module`: a concrete layer is `class Linear(nn.Module, LoraLayer)`,
so custom layers written for Hugging Face PEFT (`class MyLora(nn.Module, LoraLayer)`) work unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftcore.tuners.quantized import dequantize_weight, quantized_kind, requantize_weight


def _set_requires_grad(entry: Any, flag: bool) -> None:
    if isinstance(entry, nn.Parameter):
        entry.requires_grad_(flag)
    elif isinstance(entry, nn.Module):
        for param in entry.parameters():
            param.requires_grad_(flag)


def as_name_list(adapter_names: str | Iterable[str]) -> list[str]:
    """`"a"` → `["a"]`; any other iterable of names → a list."""
    return [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)


def adapter_dtype_for(base_weight: torch.Tensor, autocast_adapter_dtype: bool = True) -> torch.dtype:
    """fp32 adapters on a half-precision base (when autocasting); otherwise the base's own float dtype."""
    if base_weight.dtype in (torch.float16, torch.bfloat16) and autocast_adapter_dtype:
        return torch.float32
    return base_weight.dtype if base_weight.is_floating_point() else torch.float32


def features_of(base: nn.Module) -> tuple[int | None, int | None]:
    """(in, out) features of a layer: Linear, GPT-2 Conv1D, convolutions, Embedding, MultiheadAttention."""
    if isinstance(base, nn.Linear):
        return base.in_features, base.out_features
    if isinstance(base, Conv1D):
        return int(base.weight.shape[0]), int(base.weight.shape[1])
    if isinstance(base, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return base.in_channels, base.out_channels
    if isinstance(base, nn.Embedding):
        return base.num_embeddings, base.embedding_dim
    if isinstance(base, nn.MultiheadAttention):
        return base.embed_dim, 3 * base.embed_dim
    warnings.warn(
        f"Unsupported layer type '{type(base)}' encountered, proceed at your own risk.",
        UserWarning,
        stacklevel=5,
    )
    return getattr(base, "in_features", None), getattr(base, "out_features", None)


class BaseTunerLayer:
    """Adapter selection, enable/disable, gradients and deletion for one wrapped module.

    Attributes:
        adapter_layer_names: names of the containers (ModuleDict / ParameterDict) holding trainable
            per-adapter tensors; they are what `set_adapter` switches gradients on and off for.
        other_param_names: names of dicts holding per-adapter settings (rank, scaling, ...).
        merged_adapters: adapters currently folded into the base weight, oldest first.
    """

    adapter_layer_names: tuple[str, ...] = ()
    other_param_names: tuple[str, ...] = ()

    # Set by __init__; declared for type checkers (the concrete class is also an nn.Module).
    base_layer: nn.Module
    merged_adapters: list[str]
    _active_adapter: str | list[str]
    _disable_adapters: bool

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self._active_adapter = "default"
        self._disable_adapters = False
        self.merged_adapters = []
        self.kwargs = kwargs

    # -- the wrapped module ---------------------------------------------------------------------
    def get_base_layer(self) -> nn.Module:
        """The innermost wrapped module (adapter layers can be nested, e.g. a parameter wrapper)."""
        layer: Any = self
        while hasattr(layer, "base_layer"):
            layer = layer.base_layer
        return layer

    def adapter_tensor_keys(self, adapter_name: str) -> dict[str, str]:
        """On-disk key → in-memory key, both relative to this layer, of `adapter_name`'s tensors.

        The adapter name is dropped on disk: `lora_A.<name>.weight` is saved as `lora_A.weight`, and a
        ParameterDict entry `<container>.<name>` as `<container>`. A method whose file format differs
        overrides this (its name ↔ file-key mapping).
        """
        keys: dict[str, str] = {}
        for container in self.adapter_layer_names:
            box = getattr(self, container, None)
            if box is None or adapter_name not in box:
                continue
            entry = box[adapter_name]
            if isinstance(entry, nn.Parameter):
                keys[container] = f"{container}.{adapter_name}"
            else:
                for pname, _ in entry.named_parameters():
                    keys[f"{container}.{pname}"] = f"{container}.{adapter_name}.{pname}"
        return keys

    @property
    def saves_adapter_tensors(self) -> bool:
        """False for a layer that shares its tensors with another layer (which saves them)."""
        return True

    def unwrapped(self) -> nn.Module:
        """The module that takes this layer's place when the adapters are unloaded."""
        return self.get_base_layer()

    @property
    def weight(self) -> torch.Tensor:
        base = self.get_base_layer()
        # Some wrapped modules (e.g. MultiheadAttention) name their main weight differently.
        return base.weight if hasattr(base, "weight") else base.in_proj_weight  # type: ignore[return-value]

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.get_base_layer(), "bias", None)

    # -- state ------------------------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    @property
    def disable_adapters(self) -> bool:
        return self._disable_adapters

    @property
    def active_adapter(self) -> str | list[str]:
        return self._active_adapter

    @property
    def active_adapters(self) -> list[str]:
        return as_name_list(self._active_adapter)

    def _all_available_adapter_names(self) -> list[str]:
        """Every adapter name this layer holds anything for, sorted."""
        names: set[str] = set()
        for attr in self.adapter_layer_names + self.other_param_names:
            box: Any = getattr(self, attr, None)
            if box is not None and hasattr(box, "keys"):
                names.update(box.keys())
        return sorted(names)

    def _adapter_entries(self) -> Iterable[tuple[str, Any]]:
        for attr in self.adapter_layer_names:
            box = getattr(self, attr, None)
            if box is not None:
                yield from box.items()

    # -- switching ------------------------------------------------------------------------------
    def set_adapter(self, adapter_names: str | Sequence[str], inference_mode: bool = False) -> None:
        """Make `adapter_names` the active adapters; they train unless `inference_mode`, others are frozen.

        Names this layer does not hold are kept (the model-wide active set is the same on every layer)
        and simply have no effect here.
        """
        names = as_name_list(adapter_names)
        for key, entry in self._adapter_entries():
            _set_requires_grad(entry, key in names and not inference_mode)
        self._active_adapter = names

    def set_requires_grad(self, adapter_names: str | Sequence[str], requires_grad: bool = True) -> None:
        """Switch gradients of the given adapters on or off, leaving the active set as it is."""
        names = as_name_list(adapter_names)
        for key, entry in self._adapter_entries():
            if key in names:
                _set_requires_grad(entry, requires_grad)

    def enable_adapters(self, enabled: bool) -> None:
        """Enable (gradients back on for the active adapters) or disable (the base layer alone) adapters."""
        if enabled:
            self.set_adapter(self.active_adapters)
            self._disable_adapters = False
        else:
            for _, entry in self._adapter_entries():
                _set_requires_grad(entry, False)
            self._disable_adapters = True

    def delete_adapter(self, adapter_name: str) -> None:
        """Drop every tensor and setting of `adapter_name`; if it was active, the others stay active.

        The model-level delete decides the new active set and applies it to every layer afterwards,
        so all layers agree.
        """
        merged = list(self.merged_adapters)
        if adapter_name in merged:
            # Its update is in the base weight: take every merged adapter out, newest first (a DoRA merge
            # only unmerges exactly in reverse order), and merge the others back in their order after.
            cast(Any, self).unmerge()
        for attr in self.adapter_layer_names + self.other_param_names:
            box = getattr(self, attr, None)
            if box is not None and adapter_name in box:
                del box[adapter_name]
        if adapter_name in merged and len(merged) > 1:
            cast(Any, self).merge(adapter_names=[name for name in merged if name != adapter_name])
        if adapter_name in self.active_adapters:
            remaining = [name for name in self.active_adapters if name != adapter_name]
            self.set_adapter(remaining)

    # -- merging helpers --------------------------------------------------------------------------
    def adapters_to_merge(self, adapter_names: Sequence[str] | None) -> list[str]:
        """The requested (default: active) adapters minus those already merged, in order."""
        if isinstance(adapter_names, str):
            raise TypeError(
                f"adapter_names={adapter_names!r} must be a list of adapter names, e.g. [{adapter_names!r}]"
            )
        names = self.active_adapters if adapter_names is None else list(adapter_names)
        return [name for name in names if name not in self.merged_adapters]

    @staticmethod
    def _cast_input_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return x if x.dtype == dtype else x.to(dtype)

    # -- merging (a method implements the two hooks) ----------------------------------------------
    def _merged_params(
        self, adapter_name: str, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The base (weight, bias) with `adapter_name` folded in; bias None when it does not change."""
        raise NotImplementedError(f"{type(self).__name__} cannot merge its adapters into the base weights")

    def _unmerged_params(
        self, adapter_name: str, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The inverse of `_merged_params`: (weight, bias) with `adapter_name` taken out again."""
        raise NotImplementedError(f"{type(self).__name__} cannot unmerge its adapters from the base weights")

    def _holds(self, adapter_name: str) -> bool:
        """Does this layer hold tensors of `adapter_name` (the layer may hold only some adapters)?"""
        return any(
            adapter_name in box
            for box in (getattr(self, attr, None) for attr in self.adapter_layer_names)
            if box is not None
        )

    def merge(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> None:
        """Fold adapters into the base weight (and bias) through `_merged_params`; idempotent.

        Args:
            safe_merge: compute the result first and refuse it (ValueError) if it is not finite.
            adapter_names: the adapters to merge; default: the active ones.
        """
        base: Any = self.get_base_layer()
        for name in self.adapters_to_merge(adapter_names):
            if not self._holds(name):
                continue
            with torch.no_grad():
                bias = base.bias.detach() if getattr(base, "bias", None) is not None else None
                weight, new_bias = self._merged_params(name, _read_weight(base), bias)
                finite = torch.isfinite(weight).all() and (new_bias is None or torch.isfinite(new_bias).all())
                if safe_merge and not finite:
                    raise ValueError(
                        f"NaNs detected in the merged weights. The adapter {name} seems to be broken: its weights "
                        "are not finite; the base weights were left unchanged"
                    )
                _write_weight(base, weight)
                if new_bias is not None:
                    base.bias.data.copy_(new_bias.to(base.bias.dtype))
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Take every merged adapter back out of the base weight (and bias), newest first."""
        base: Any = self.get_base_layer()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if not self._holds(name):
                continue
            with torch.no_grad():
                bias = base.bias.detach() if getattr(base, "bias", None) is not None else None
                weight, new_bias = self._unmerged_params(name, _read_weight(base), bias)
                _write_weight(base, weight)
                if new_bias is not None:
                    base.bias.data.copy_(new_bias.to(base.bias.dtype))

    def _skip_adapters(self) -> bool:
        """True when the base layer alone answers (adapters disabled; merged ones unmerged first)."""
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return True
        return False


def _read_weight(base: Any) -> torch.Tensor:
    """The base weight as float numbers (a bitsandbytes layer's dequantized)."""
    if quantized_kind(base) is not None:
        return dequantize_weight(base)
    return cast(torch.Tensor, base.weight.detach())


def _write_weight(base: Any, new: torch.Tensor) -> None:
    """Store `new` as the base weight (a bitsandbytes layer quantizes it again with its settings)."""
    if quantized_kind(base) is not None:
        requantize_weight(base, new)
    else:
        base.weight.data.copy_(new.to(base.weight.dtype))
