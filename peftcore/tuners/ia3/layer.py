"""(IA)³ layers: a learned vector rescales what a layer computes.

    output scaling (attention projections):   y = l ⊙ (W x + b)       l: (out,)
    input scaling (feed-forward layers):      y = W (l ⊙ x) + b       l: (in,)

The vectors start at 1, so the adapter is the identity at init. Merging folds `l` into the weight
(rows for output scaling, columns for input scaling; the bias too for output scaling), and unmerging
divides it out again: exact only up to rounding, and impossible where `l` has zeros. With several
active adapters their vectors multiply.

On disk the vector is `<path>.ia3_l`: (out, 1) or (1, in) for Linear and GPT-2 Conv1D (in HF PEFT's
layout, whatever the weight's orientation), (1, C, 1, 1[, 1]) for Conv2d / Conv3d.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from peftcore.tuners.base_layer import BaseTunerLayer, adapter_dtype_for, features_of
from peftcore.tuners.ia3.config import IA3Config
from peftcore.tuners.quantized import quantized_kind

# Added to the vector before dividing it out (as HF PEFT does), so a zero entry does not give inf.
_UNMERGE_EPS = 1e-8


class IA3Layer(BaseTunerLayer):
    """Per-adapter (IA)³ vectors of one layer; `Linear`, `Conv2d`, `Conv3d` fix how they broadcast."""

    adapter_layer_names: tuple[str, ...] = ("ia3_l",)
    other_param_names: tuple[str, ...] = ()

    def __init__(self, base_layer: nn.Module, is_feedforward: bool, **kwargs: Any) -> None:
        BaseTunerLayer.__init__(self, base_layer)
        self.ia3_l = nn.ParameterDict()
        self.is_feedforward = is_feedforward
        in_features, out_features = features_of(self.get_base_layer())
        self.in_features: int = int(in_features or 0)
        self.out_features: int = int(out_features or 0)

    # -- per layer type ---------------------------------------------------------------------------
    def _vector_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _activation_scale(self, vector: torch.Tensor) -> torch.Tensor:
        """The vector shaped to broadcast over the layer's input (feed-forward) or output."""
        raise NotImplementedError

    def _weight_scale(self, vector: torch.Tensor) -> torch.Tensor:
        """The vector shaped to broadcast over the base weight (rows or columns)."""
        raise NotImplementedError

    # -- adapters ---------------------------------------------------------------------------------
    def update_layer(
        self,
        adapter_name: str,
        config: IA3Config,
        low_cpu_mem_usage: bool = False,
        autocast_adapter_dtype: bool = True,
        **kwargs: Any,
    ) -> None:
        """Add adapter `adapter_name`: a vector of ones (random with `init_ia3_weights=False`)."""
        weight = cast(torch.Tensor, cast(Any, self.get_base_layer()).weight)
        device = torch.device("meta") if low_cpu_mem_usage else weight.device
        dtype = adapter_dtype_for(weight, autocast_adapter_dtype)
        vector = torch.randn(self._vector_shape(), device=device, dtype=dtype)
        self.ia3_l[adapter_name] = nn.Parameter(vector)
        if config.init_ia3_weights and not low_cpu_mem_usage:
            with torch.no_grad():
                self.ia3_l[adapter_name].fill_(1.0)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _scaling(self, names: Sequence[str]) -> torch.Tensor | None:
        """The product of the vectors of `names` (those this layer holds), or None."""
        out: torch.Tensor | None = None
        for name in names:
            if name in self.ia3_l:
                vector = self.ia3_l[name]
                out = vector if out is None else out * vector
        return out

    # -- merging ----------------------------------------------------------------------------------
    def _merged_params(
        self, adapter_name: str, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        vector = self.ia3_l[adapter_name].detach()
        new_weight = weight * self._weight_scale(vector).to(weight.dtype)
        if self.is_feedforward or bias is None:
            return new_weight, None
        return new_weight, bias * vector.reshape(bias.shape).to(bias.dtype)

    def _unmerged_params(
        self, adapter_name: str, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        vector = self.ia3_l[adapter_name].detach()
        new_weight = weight / (self._weight_scale(vector) + _UNMERGE_EPS).to(weight.dtype)
        if self.is_feedforward or bias is None:
            return new_weight, None
        return new_weight, bias / (vector.reshape(bias.shape) + _UNMERGE_EPS).to(bias.dtype)

    def unmerge(self) -> None:
        if self.merged:
            warnings.warn("Unmerge result can be inaccurate for (IA)^3.", stacklevel=2)
        super().unmerge()

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._skip_adapters() or self.merged:
            return self.base_layer(x, *args, **kwargs)
        unmerged = [name for name in self.active_adapters if name not in self.merged_adapters]
        scaling = self._scaling(unmerged)
        if scaling is None:
            return self.base_layer(x, *args, **kwargs)
        if self.is_feedforward:
            scaled = x.to(scaling.dtype) * self._activation_scale(scaling)
            base = self.get_base_layer()
            # A bitsandbytes base takes float input whatever its codes' dtype (it casts to its compute dtype).
            weight_dtype = (
                x.dtype if quantized_kind(base) else cast(torch.Tensor, cast(Any, base).weight).dtype
            )
            return self.base_layer(scaled.to(weight_dtype), *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        return (result.to(scaling.dtype) * self._activation_scale(scaling)).to(result.dtype)

    def extra_repr(self) -> str:
        kind = "input" if self.is_feedforward else "output"
        return f"in_features={self.in_features}, out_features={self.out_features}, scales the {kind}"

    def __repr__(self) -> str:
        return "ia3." + nn.Module.__repr__(cast(nn.Module, self))


class Linear(nn.Module, IA3Layer):
    """(IA)³ on `nn.Linear` and GPT-2 style `Conv1D` (weight stored (in, out): `fan_in_fan_out`)."""

    # nn.Module comes first in the bases, so its own forward / repr would win: use the (IA)³ ones.
    forward = IA3Layer.forward
    __repr__ = IA3Layer.__repr__
    extra_repr = IA3Layer.extra_repr

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str = "default",
        config: IA3Config | None = None,
        is_feedforward: bool = False,
        fan_in_fan_out: bool = False,
        is_target_conv_1d_layer: bool = False,
        **kwargs: Any,
    ) -> None:
        nn.Module.__init__(self)
        IA3Layer.__init__(self, base_layer, is_feedforward=is_feedforward)
        self.fan_in_fan_out = fan_in_fan_out
        self.is_target_conv_1d_layer = is_target_conv_1d_layer
        self._active_adapter = adapter_name
        if config is not None:
            self.update_layer(adapter_name, config, **kwargs)

    def _vector_shape(self) -> tuple[int, ...]:
        return (1, self.in_features) if self.is_feedforward else (self.out_features, 1)

    def _activation_scale(self, vector: torch.Tensor) -> torch.Tensor:
        return vector.flatten()

    def _weight_scale(self, vector: torch.Tensor) -> torch.Tensor:
        # (out, 1) scales rows of an (out, in) weight, (1, in) its columns; Conv1D stores (in, out).
        return vector.t() if self.fan_in_fan_out else vector


class _ConvNd(nn.Module, IA3Layer):
    """(IA)³ on a convolution: one entry per input (feed-forward) or output channel."""

    # nn.Module comes first in the bases, so its own forward / repr would win: use the (IA)³ ones.
    forward = IA3Layer.forward
    __repr__ = IA3Layer.__repr__
    extra_repr = IA3Layer.extra_repr
    kernel_dim = 0

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str = "default",
        config: IA3Config | None = None,
        is_feedforward: bool = False,
        **kwargs: Any,
    ) -> None:
        nn.Module.__init__(self)
        IA3Layer.__init__(self, base_layer, is_feedforward=is_feedforward)
        dim = cast(Any, self.get_base_layer()).weight.dim()
        if dim != self.kernel_dim:
            raise ValueError(
                f"{type(self).__name__} layer kernel must have {self.kernel_dim} dimensions, not {dim}; wrap the "
                "layer with the (IA)³ class of its own convolution type"
            )
        self._active_adapter = adapter_name
        if config is not None:
            self.update_layer(adapter_name, config, **kwargs)

    def _vector_shape(self) -> tuple[int, ...]:
        channels = self.in_features if self.is_feedforward else self.out_features
        return (1, channels, *([1] * (self.kernel_dim - 2)))

    def _activation_scale(self, vector: torch.Tensor) -> torch.Tensor:
        return vector

    def _weight_scale(self, vector: torch.Tensor) -> torch.Tensor:
        if not self.is_feedforward:
            return vector.transpose(0, 1)  # (out, 1, 1, ...): one factor per output channel
        conv = cast(nn.Conv2d, self.get_base_layer())
        if conv.groups == 1:
            return vector
        # A grouped kernel holds only its group's input channels: pick each output channel's slice.
        per_group_in = conv.in_channels // conv.groups
        per_group_out = conv.out_channels // conv.groups
        grouped = vector.reshape(conv.groups, 1, per_group_in, *vector.shape[2:])
        grouped = grouped.expand(conv.groups, per_group_out, per_group_in, *vector.shape[2:])
        return grouped.reshape(conv.out_channels, per_group_in, *vector.shape[2:])


class Conv2d(_ConvNd):
    kernel_dim = 4


class Conv3d(_ConvNd):
    kernel_dim = 5
