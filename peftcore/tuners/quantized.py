"""Quantized base layers, for every method: which layers are bitsandbytes', and their weight as numbers.

bitsandbytes keeps `Linear4bit` weights as packed 4-bit codes with per-block scales and `Linear8bitLt`
weights as int8 rows with a per-row scale. An adapter layer that reads or writes the base weight (to
merge, to unmerge, for DoRA's norm) goes through `dequantize_weight` / `requantize_weight`, never the
raw codes. A layer quantized by any other library is recognised (`foreign_quantization`) so that it is
refused, not wrapped as if it held floats.

bitsandbytes is optional: nothing here imports it unless a model already did.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn


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
