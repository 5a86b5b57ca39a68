"""LoKr layers: a Kronecker product as the weight update.

    ΔW = (alpha / r) · W1 ⊗ W2        W1: (out_a, in_a),  W2: (out_b, in_b·k·k)

with out = out_a·out_b and in = in_a·in_b split by `factorization` (near the square root, or near
`decompose_factor`). A factor is stored whole (`lokr_w1`, `lokr_w2`) or, when r is small enough to
save parameters, as a rank-r product (`lokr_w1_a` @ `lokr_w1_b`; W1 only with `decompose_both`).
With `use_effective_conv2d` a decomposed W2 of a k×k convolution is a rank-r core `lokr_t2` (r, r,
k, k) contracted with `lokr_w2_a` (r, out_b) and `lokr_w2_b` (r, in_b). Init (HF PEFT's): W1 (or
W1a) = 0, the rest kaiming-uniform, so ΔW starts at 0; "lycoris" zeroes W2 (or W2b) instead; False
leaves everything random.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from peftcore.tuners.loha.layer import _kaiming
from peftcore.tuners.lycoris import LycorisLayer


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """`dimension` = m · n with m <= n: m = `factor` when it divides; otherwise the divisor pair
    closest to the square root whose first member does not exceed `factor` (no limit for -1)."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    limit = dimension if factor == -1 else factor
    m, n = 1, dimension
    while m < n:
        candidate = m + 1
        while dimension % candidate:
            candidate += 1
        if candidate > limit:
            break
        m, n = candidate, dimension // candidate
    return (m, n) if m <= n else (n, m)


class LoKrLayer(nn.Module, LycorisLayer):
    """LoKr on a Linear, Conv1d or Conv2d (`Linear` / `Conv1d` / `Conv2d` are this class by name)."""

    adapter_layer_names: tuple[str, ...] = (
        "lokr_w1",
        "lokr_w1_a",
        "lokr_w1_b",
        "lokr_w2",
        "lokr_w2_a",
        "lokr_w2_b",
        "lokr_t2",
    )
    other_param_names: tuple[str, ...] = (*LycorisLayer.other_param_names, "rank_dropout_scale")
    forward = LycorisLayer.forward

    def __init__(
        self, base_layer: nn.Module, adapter_name: str = "default", config: Any = None, **kwargs: Any
    ) -> None:
        nn.Module.__init__(self)
        LycorisLayer.__init__(self, base_layer)
        self.rank_dropout_scale: dict[str, bool] = {}
        self._active_adapter = adapter_name
        if config is not None:
            self.update_layer(adapter_name, config, **kwargs)

    def update_layer(
        self,
        adapter_name: str,
        config: Any,
        r: int,
        alpha: float,
        low_cpu_mem_usage: bool = False,
        autocast_adapter_dtype: bool = True,
        **kwargs: Any,
    ) -> None:
        self.rank_dropout_scale[adapter_name] = bool(config.rank_dropout_scale)
        super().update_layer(
            adapter_name, config, r, alpha, low_cpu_mem_usage, autocast_adapter_dtype, **kwargs
        )

    def rescales_rank_dropout(self, adapter_name: str) -> bool:
        return self.rank_dropout_scale.get(adapter_name, False)

    def create_factors(self, adapter_name: str, r: int, config: Any) -> dict[str, torch.Tensor]:
        base = self.get_base_layer()
        weight = cast(torch.Tensor, cast(Any, base).weight)
        out_dim, in_dim, *kernel = weight.shape
        out_a, out_b = factorization(out_dim, config.decompose_factor)
        in_a, in_b = factorization(in_dim, config.decompose_factor)
        whole_w1 = not (config.decompose_both and r < max(out_a, in_a) / 2)
        whole_w2 = r >= max(out_b, in_b) / 2
        effective = bool(config.use_effective_conv2d) and bool(kernel) and math.prod(kernel) > 1
        factors: dict[str, torch.Tensor] = {}
        if whole_w1:
            factors["lokr_w1"] = _kaiming(out_a, in_a)
        else:
            factors["lokr_w1_a"] = _kaiming(out_a, r)
            factors["lokr_w1_b"] = _kaiming(r, in_a)
        if whole_w2:
            factors["lokr_w2"] = _kaiming(out_b, in_b, *kernel)
        elif effective:
            core = kernel if len(kernel) == 2 else [kernel[0], 1]
            factors["lokr_t2"] = _kaiming(r, r, *core)
            factors["lokr_w2_a"] = _kaiming(r, out_b)
            factors["lokr_w2_b"] = _kaiming(r, in_b)
        else:
            factors["lokr_w2_a"] = _kaiming(out_b, r)
            factors["lokr_w2_b"] = _kaiming(r, in_b * math.prod(kernel))
        if config.init_weights == "lycoris":
            factors["lokr_w2" if whole_w2 else "lokr_w2_b"].zero_()
        elif config.init_weights:
            factors["lokr_w1" if whole_w1 else "lokr_w1_a"].zero_()
        return factors

    def _box(self, name: str) -> nn.ParameterDict:
        return cast(nn.ParameterDict, getattr(self, name))

    def combine(self, adapter_name: str) -> torch.Tensor:
        if adapter_name in self._box("lokr_w1"):
            w1 = self._box("lokr_w1")[adapter_name]
        else:
            w1 = self._box("lokr_w1_a")[adapter_name] @ self._box("lokr_w1_b")[adapter_name]
        if adapter_name in self._box("lokr_w2"):
            w2 = self._box("lokr_w2")[adapter_name]
        elif adapter_name in self._box("lokr_t2"):
            a, b = self._box("lokr_w2_a")[adapter_name], self._box("lokr_w2_b")[adapter_name]
            w2 = torch.einsum("pqkl,po,qc->ockl", self._box("lokr_t2")[adapter_name], a, b)
        else:
            w2 = self._box("lokr_w2_a")[adapter_name] @ self._box("lokr_w2_b")[adapter_name]
        if w2.dim() == 3:  # a whole Conv1d W2: torch.kron's own broadcasting, as HF PEFT computes it
            return torch.kron(w1, w2)
        # (W1 ⊗ W2)[i·b + j, k·d + l, ...] = W1[i, k] · W2[j, l, ...]; the kernel dims come from W2.
        (a, c), (b, d, *kernel) = w1.shape, w2.shape
        blocks = w1[:, None, :, None].reshape(a, 1, c, 1, *([1] * len(kernel))) * w2[None, :, None]
        return blocks.reshape(a * b, c * d, *kernel)

    def __repr__(self) -> str:
        return "lokr." + nn.Module.__repr__(self)


Linear = Conv1d = Conv2d = LoKrLayer
