"""LoRA on `nn.Conv1d`, `nn.Conv2d` and `nn.Conv3d`.

A is a convolution with the base layer's kernel, stride, padding and dilation from `in` to `r`
channels; B is a 1×…×1 convolution from `r` to `out` channels (with the base layer's groups). The
update `s · B(A(x))` equals a convolution with the kernel `s · Σ_r B[o, r] A[r, i, …]`, which is what
merging adds to the base kernel (groups = 1 only: with groups > 1 the update mixes all input
channels, which a grouped kernel cannot hold).
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.layer import LoraLayer

_CONV_BY_DIM: dict[int, type[nn.Module]] = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}
_CONV_FN = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}


class _ConvNd(nn.Module, LoraLayer):
    """LoRA on an N-d convolution; `Conv1d`, `Conv2d`, `Conv3d` only fix the kernel dimension."""

    # nn.Module comes first in the bases, so its own repr hooks would win: use LoRA's.
    __repr__ = LoraLayer.__repr__
    extra_repr = LoraLayer.extra_repr

    kernel_dim: int = 0

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str = "default",
        config: LoraConfig | None = None,
        r: int = 0,
        lora_alpha: float = 1,
        **kwargs: Any,
    ) -> None:
        nn.Module.__init__(self)
        LoraLayer.__init__(self, base_layer, **kwargs)
        dim = cast(Any, self.get_base_layer()).weight.dim()
        if dim != self.kernel_dim:
            raise ValueError(
                f"{type(self).__name__} needs a base layer whose weight has {self.kernel_dim} dimensions, got {dim}; "
                f"wrap it with the LoRA layer of its own convolution type"
            )
        self._active_adapter = adapter_name
        if config is not None and r > 0:
            self.update_layer(adapter_name, r, lora_alpha, config, **kwargs)

    @property
    def _conv(self) -> nn.Conv1d | nn.Conv2d | nn.Conv3d:
        return cast("nn.Conv1d | nn.Conv2d | nn.Conv3d", self.get_base_layer())

    def _check_update(self, adapter_name: str, r: int, config: LoraConfig) -> None:
        base = self._conv
        if r % base.groups != 0:
            raise ValueError(
                f"Targeting a {type(base).__name__} with groups={base.groups} and rank {r}. Currently, support is "
                "limited to conv layers where the rank is divisible by groups. Either choose a different rank or do "
                "not target this specific layer."
            )
        if base.groups > 1:
            warnings.warn(
                "LoRA adapter added to ConvNd layer with groups > 1. Merging is not supported.", stacklevel=4
            )

    def _create_adapter(
        self, adapter_name: str, r: int, lora_bias: bool, tensor_kwargs: dict[str, Any]
    ) -> None:
        base = self._conv
        conv_cls: Any = _CONV_BY_DIM[self.kernel_dim]
        ones = (1,) * (self.kernel_dim - 2)
        self.lora_A[adapter_name] = conv_cls(
            base.in_channels,
            r,
            base.kernel_size,
            base.stride,
            base.padding,
            dilation=base.dilation,
            bias=False,
            padding_mode=base.padding_mode,
            **tensor_kwargs,
        )
        self.lora_B[adapter_name] = conv_cls(
            r, base.out_channels, ones, ones, groups=base.groups, bias=lora_bias, **tensor_kwargs
        )

    def _lora_rows(self, adapter_name: str) -> torch.Tensor:
        a = cast(Any, self.lora_A[adapter_name]).weight
        b = cast(Any, self.lora_B[adapter_name]).weight
        if a.device.type == "cpu" and a.dtype in (torch.float16, torch.bfloat16):
            a, b = a.float(), b.float()
        r = a.shape[0]
        if self._conv.groups > 1:
            # The update of a grouped conv has no kernel of the base's grouped shape (it mixes all input
            # channels). For DoRA's norm this follows HF PEFT's convention, B viewed (·, r) times A viewed
            # (r, ·), reshaped to the base kernel, so magnitudes agree between the libraries.
            weight = self._conv.weight
            return (b.reshape(-1, r) @ a.reshape(r, -1)).reshape(weight.shape).flatten(1).to(a.dtype)
        return (b.flatten(1) @ a.flatten(1)).to(cast(Any, self.lora_A[adapter_name]).weight.dtype)

    def _weight_rows(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.flatten(1)

    def _magnitude_shape(self, norm: torch.Tensor) -> torch.Tensor:
        return norm.view(1, -1, *([1] * (self.kernel_dim - 2)))

    def _check_mergeable(self, adapter_name: str) -> None:
        if self._conv.groups > 1:
            raise NotImplementedError(
                "Merging is not supported for _ConvNd layers with groups > 1! The update of a grouped convolution "
                "mixes all input channels; keep the adapter unmerged"
            )
        super()._check_mergeable(adapter_name)

    def _lora_output(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_A[adapter_name], self.lora_B[adapter_name]
        x = self._cast_input_dtype(x, cast(Any, a).weight.dtype)
        return b(a(self.lora_dropout[adapter_name](x))) * self.scaling[adapter_name]

    def forward(self, x: torch.Tensor, *args: Any, adapter_names: Any = None, **kwargs: Any) -> torch.Tensor:
        if self._skip_adapters():
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        for name in self.active_adapters:
            if name not in self.r or name in self.merged_adapters:
                continue
            if name in self.lora_magnitude_vector:
                update = self._dora_update(name, x, result)
            else:
                update = self._lora_output(name, x)
            result = result + update.to(result.dtype)
        return result

    def _dora_update(self, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """(m/‖W+sBA‖ − 1)·conv(x, W) + (m/‖W+sBA‖)·s·B(A(x)), per output channel."""
        base = self._conv
        a = cast(Any, self.lora_A[name])
        xa = self.lora_dropout[name](self._cast_input_dtype(x, a.weight.dtype))
        magnitude = self._magnitude(name)
        norm = self._dora_norm(name, base.weight.detach()).detach()
        scale = magnitude / norm.view(magnitude.shape)
        if isinstance(self.lora_dropout[name], nn.Identity) or not self.training:
            base_out = result.to(magnitude.dtype)
            if base.bias is not None:
                base_out = base_out - base.bias.to(magnitude.dtype).view(scale.shape)
        else:
            conv_fn: Any = _CONV_FN[self.kernel_dim]
            base_out = conv_fn(
                xa,
                base.weight.to(xa.dtype),
                None,
                stride=base.stride,
                padding=base.padding,
                dilation=base.dilation,
                groups=base.groups,
            )
        lora_out = self.lora_B[name](a(xa))
        return (scale - 1) * base_out + scale * lora_out * self.scaling[name]


class Conv1d(_ConvNd):
    kernel_dim = 3


class Conv2d(_ConvNd):
    kernel_dim = 4


class Conv3d(_ConvNd):
    kernel_dim = 5
