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

import sys
from typing import Any

import torch
from torch import nn

from peftcore.tuners.lora.linear import Linear as LoraLinear


def _bnb() -> Any:
    """The bitsandbytes module when it is loaded already, else None."""
    return sys.modules.get("bitsandbytes")


def quantized_kind(module: nn.Module) -> str | None:
    """ "4bit" for a bitsandbytes Linear4bit, "8bit" for a Linear8bitLt, else None."""
    bnb = _bnb()
    if bnb is None:
        return None
    if isinstance(module, bnb.nn.Linear4bit):
        return "4bit"
    if isinstance(module, bnb.nn.Linear8bitLt):
        return "8bit"
    return None


def dequantize_weight(base: nn.Module) -> torch.Tensor:
    """The float weight (out, in) a bitsandbytes layer computes with, in float32."""
    import bitsandbytes as bnb

    weight: Any = base.weight
    if weight.is_floating_point():  # Linear8bitLt(has_fp16_weights=True) keeps a float weight
        return weight.detach().float()
    if isinstance(base, bnb.nn.Linear4bit):
        _unpack_for_cpu(weight)
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
    # int8 rows and one scale per row: before the first forward the scale sits on the weight, after it
    # on the layer's matmul state.
    state: Any = getattr(base, "state", None)
    scales = weight.SCB if getattr(weight, "SCB", None) is not None else getattr(state, "SCB", None)
    if scales is None:
        raise RuntimeError(
            f"the int8 weight of {type(base).__name__} has no row scales (SCB): it was never quantized"
        )
    return bnb.functional.int8_vectorwise_dequant(weight.data, scales).float()


def _unpack_for_cpu(weight: Any) -> None:
    """Put a 4-bit weight back in bitsandbytes' standard layout if its CPU kernel repacked it.

    On a CPU with AVX512-BF16, bitsandbytes repacks a Linear4bit's codes (and turns its scales to
    bfloat16) at the first inference-mode forward; read as standard codes they are garbage. Its own
    `save` and device moves undo the repacking first, and so does this (the next inference forward
    repacks again).
    """
    import bitsandbytes as bnb

    if not getattr(weight.quant_state, "packing_format_for_cpu", False):
        return
    inverse = getattr(bnb.functional, "_convert_weight_packed_for_cpu_inverse", None)
    if inverse is None:
        raise RuntimeError(
            "this bitsandbytes repacked a 4-bit weight for its CPU kernel and offers no way back to the "
            "standard layout; merge before running the model in eval mode, or use bitsandbytes 0.50"
        )
    weight.data, weight.quant_state = inverse(weight.data, weight.quant_state)


def requantize_weight(base: nn.Module, new: torch.Tensor) -> None:
    """Replace the layer's weight by `new` (float, (out, in)), quantized with the layer's own settings."""
    import bitsandbytes as bnb

    old: Any = base.weight
    if old.is_floating_point():
        old.data.copy_(new.to(old.dtype))
        return
    device = old.device
    if isinstance(base, bnb.nn.Linear4bit):
        state = old.quant_state
        params: Any = bnb.nn.Params4bit(
            new.to(device="cpu", dtype=state.dtype).contiguous(),
            requires_grad=False,
            blocksize=old.blocksize,
            compress_statistics=old.compress_statistics,
            quant_type=old.quant_type,
            quant_storage=old.quant_storage,
            module=base,
        )
        base.weight = params.to(device)  # quantizes
        return
    codes: Any = bnb.nn.Int8Params(
        new.to("cpu").contiguous(), requires_grad=False, has_fp16_weights=old.has_fp16_weights
    )
    base.weight = codes.to(device)  # quantizes
    # The next forward moves the new codes and scales into the matmul state (init_8bit_state).
    matmul_state: Any = base.state
    matmul_state.CB = None
    matmul_state.SCB = None


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

# Traces other quantization libraries leave on a layer; peftcore does not know how their weights work.
_FOREIGN_ATTRS = ("qweight", "qzeros", "W_q", "weight_packed", "quant_state", "scales_and_zeros", "codes")


def foreign_quantization(module: nn.Module) -> str | None:
    """Why `module` looks quantized by a library peftcore does not support (None when it does not)."""
    if quantized_kind(module) is not None:
        return None
    found = [a for a in _FOREIGN_ATTRS if isinstance(getattr(module, a, None), torch.Tensor | nn.Parameter)]
    if found:
        return f"it holds quantized tensors ({', '.join(found)})"
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor):
        if not (weight.is_floating_point() or weight.is_complex()):
            return f"its weight is {weight.dtype}, not a float"
        data = weight.data if isinstance(weight, nn.Parameter) else weight
        if type(data) is not torch.Tensor:
            return f"its weight is a {type(data).__module__}.{type(data).__name__} tensor subclass"
    return None


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
