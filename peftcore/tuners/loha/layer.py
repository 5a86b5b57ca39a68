"""LoHa layers: a low-rank Hadamard product as the weight update.

    ΔW = (alpha / r) · (W1a W1b) ⊙ (W2a W2b)        W·a: (out, r), W·b: (r, in·k·k)

With `use_effective_conv2d` on a k×k convolution, each product is instead a rank-r core `T` (r, r,
k, k) contracted with `Wa` (r, out) and `Wb` (r, in): `ΔWᵢ[o, c, :, :] = Σ_pq Tᵢ[p, q] Waᵢ[p, o]
Wbᵢ[q, c]`. Init (HF PEFT's): every factor kaiming-uniform except `W2b` = 0, so ΔW starts at 0
(`init_weights=False`: all random). On disk: `<path>.hada_w1_a`, `hada_w1_b`, `hada_w2_a`,
`hada_w2_b` (and `hada_t1`, `hada_t2`).
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from peftcore.tuners.lycoris import LycorisLayer


def _kaiming(*shape: int) -> torch.Tensor:
    tensor = torch.empty(*shape)
    nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))
    return tensor


def kernel_shape(base: nn.Module, effective: bool) -> tuple[int, ...]:
    """(out, in) of the flattened weight, or (out, in, *kernel) when the kernel keeps its own core."""
    weight = cast(torch.Tensor, cast(Any, base).weight)
    if isinstance(base, nn.Conv2d | nn.Conv1d):
        out, per_group_in, *kernel = weight.shape
        if effective and math.prod(kernel) > 1:
            return (out, per_group_in, *kernel)
        return (out, per_group_in * math.prod(kernel))
    return tuple(weight.shape)


class LoHaLayer(nn.Module, LycorisLayer):
    """LoHa on a Linear, Conv1d or Conv2d (`Linear` / `Conv1d` / `Conv2d` are this class by name)."""

    adapter_layer_names: tuple[str, ...] = (
        "hada_w1_a",
        "hada_w1_b",
        "hada_w2_a",
        "hada_w2_b",
        "hada_t1",
        "hada_t2",
    )
    forward = LycorisLayer.forward

    def __init__(
        self, base_layer: nn.Module, adapter_name: str = "default", config: Any = None, **kwargs: Any
    ) -> None:
        nn.Module.__init__(self)
        LycorisLayer.__init__(self, base_layer)
        self._active_adapter = adapter_name
        if config is not None:
            self.update_layer(adapter_name, config, **kwargs)

    def create_factors(self, adapter_name: str, r: int, config: Any) -> dict[str, torch.Tensor]:
        shape = kernel_shape(self.get_base_layer(), bool(config.use_effective_conv2d))
        out, inp = shape[0], shape[1]
        if len(shape) > 2:  # the CP form: a core per product, factors (r, out) and (r, in)
            kernel = shape[2:] if len(shape) == 4 else (shape[2], 1)
            factors = {
                "hada_t1": _kaiming(r, r, *kernel),
                "hada_w1_a": _kaiming(r, out),
                "hada_w1_b": _kaiming(r, inp),
                "hada_t2": _kaiming(r, r, *kernel),
                "hada_w2_a": _kaiming(r, out),
                "hada_w2_b": _kaiming(r, inp),
            }
        else:
            factors = {
                "hada_w1_a": _kaiming(out, r),
                "hada_w1_b": _kaiming(r, inp),
                "hada_w2_a": _kaiming(out, r),
                "hada_w2_b": _kaiming(r, inp),
            }
        if config.init_weights:
            factors["hada_w2_b"].zero_()
        return factors

    def _product(self, adapter_name: str, i: int) -> torch.Tensor:
        a = cast(nn.ParameterDict, getattr(self, f"hada_w{i}_a"))[adapter_name]
        b = cast(nn.ParameterDict, getattr(self, f"hada_w{i}_b"))[adapter_name]
        cores = cast(nn.ParameterDict, getattr(self, f"hada_t{i}"))
        if adapter_name in cores:
            return torch.einsum("pqkl,po,qc->ockl", cores[adapter_name], a, b)
        return a @ b

    def combine(self, adapter_name: str) -> torch.Tensor:
        return self._product(adapter_name, 1) * self._product(adapter_name, 2)

    def __repr__(self) -> str:
        return "loha." + nn.Module.__repr__(self)


Linear = Conv1d = Conv2d = LoHaLayer
