"""LoRA on bitsandbytes' quantized linear layers (QLoRA): `Linear4bit` and `Linear8bitLt`.

The base keeps its quantized weight (4-bit NF4/FP4 packed two to a byte with per-block scales, or int8
rows with a per-row scale); the adapter is an ordinary float pair A, B beside it:

    y = Q(W) x + s · B A dropout(x)

The forward is the plain Linear's (`linear.py`): bitsandbytes computes Q(W) x, LoRA adds its update.
What differs is every place that reads or writes W as numbers, which must never touch the raw codes:

- `merge` dequantizes W, adds s·BA (or the DoRA rescaling) and quantizes the sum again, with the same
  quantization settings; `unmerge` does the reverse. A merged quantized layer therefore carries the
  quantization error of the new weight (as in HF PEFT); `merge_into_dequantized` gives the exact
  merged weight instead, in plain `nn.Linear` layers of a chosen float dtype.
- DoRA's weight norm reads the dequantized W.

bitsandbytes is an optional dependency: nothing here imports it unless a model already did (a model
with bitsandbytes layers was loaded through it), so LoRA on ordinary layers never pays for it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peftcore.tuners.lora.linear import Linear as LoraLinear
from peftcore.tuners.quantized import (
    dequantize_weight,
    foreign_quantization,
    quantized_kind,
    requantize_weight,
)

__all__ = [
    "LAYER_CLASSES",
    "Linear4bit",
    "Linear8bitLt",
    "dequantize_weight",
    "foreign_quantization",
    "merge_into_dequantized",
    "quantized_kind",
    "requantize_weight",
]


class _QuantizedLinear(LoraLinear):
    """LoRA on a bitsandbytes linear layer: the Linear forward, with W read and written as numbers."""

    def _base_weight(self) -> torch.Tensor:
        return dequantize_weight(self.get_base_layer())

    def _store_base_weight(self, new: torch.Tensor) -> None:
        requantize_weight(self.get_base_layer(), new)


class Linear4bit(_QuantizedLinear):
    """LoRA on `bitsandbytes.nn.Linear4bit` (QLoRA)."""


class Linear8bitLt(_QuantizedLinear):
    """LoRA on `bitsandbytes.nn.Linear8bitLt`."""


LAYER_CLASSES: dict[str, type[nn.Module]] = {"4bit": Linear4bit, "8bit": Linear8bitLt}


def merge_into_dequantized(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Merge every LoRA adapter of `model` exactly and return the base model without bitsandbytes layers.

    Each bitsandbytes layer becomes an `nn.Linear` of `dtype` holding its dequantized weight plus, where
    LoRA adapts it, the active adapters' updates; the other LoRA layers are merged as usual. Unlike
    `merge_and_unload` on a quantized model, the merged weights are not quantized a second time, so
    the result equals the adapted quantized model up to `dtype`'s rounding. `model` is a PeftModel or
    a model with LoRA layers; it is changed in place and its unwrapped base is returned.
    """
    from peftcore.tuners.base_layer import BaseTunerLayer

    root: Any = model
    inner = getattr(root, "base_model", None)
    if inner is not None and hasattr(inner, "model") and inner is not root:
        root = inner  # PeftModel -> its tuner
    target = getattr(root, "model", root)
    replaced: list[str] = []
    for name, module in list(target.named_modules()):
        if any(name.startswith(prefix + ".") for prefix in replaced):
            continue  # inside a layer replaced already (its base layer, its adapters)
        if isinstance(module, BaseTunerLayer) or quantized_kind(module) is not None:
            replaced.append(name)
        if isinstance(module, BaseTunerLayer) and isinstance(module.get_base_layer(), nn.Module):
            base = module.get_base_layer()
            if quantized_kind(base) is not None:
                lora: Any = module
                weight = dequantize_weight(base)
                for adapter in lora.active_adapters:
                    if adapter in lora.r and adapter not in lora.merged_adapters:
                        weight = lora._merged_weight(adapter, weight)
                        bias_delta = lora._bias_delta(adapter)
                        if bias_delta is not None:
                            base.bias.data += bias_delta.to(base.bias.dtype)
                _replace(target, name, _plain_linear(base, weight, dtype))
            else:
                cast_any: Any = module
                cast_any.merge()
                _replace(target, name, module.get_base_layer())
        elif quantized_kind(module) is not None:
            _replace(target, name, _plain_linear(module, dequantize_weight(module), dtype))
    for attr in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
        if getattr(target, attr, False):
            setattr(target, attr, False)
    if hasattr(target, "hf_quantizer"):
        target.hf_quantizer = None
    config = getattr(target, "config", None)
    if config is not None and hasattr(config, "quantization_config"):
        del config.quantization_config
    return target


def _plain_linear(base: nn.Module, weight: torch.Tensor, dtype: torch.dtype) -> nn.Linear:
    bias: Any = getattr(base, "bias", None)
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=bias is not None, device=weight.device, dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.to(dtype))
        if bias is not None:
            linear.bias.copy_(bias.detach().to(dtype))
    return linear


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
