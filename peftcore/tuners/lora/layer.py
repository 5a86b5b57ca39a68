"""LoRA layers: wrappers that hold the original `base_layer` and add a low-rank update beside it.

    x ──► base_layer (frozen W, b) ──────────────────────────────┐
    │                                                           (+) ──► y
    └──► dropout ──► A (r × in) ──► B (out × r) ──► × scaling ───┘

    y = W x + b + s · B A dropout(x),   s = lora_alpha / r   (or lora_alpha / sqrt(r), rsLoRA)

Merging folds the update into the base weight, `W ← W + s · B A` (transposed for fan-in-fan-out
weights), and unmerging subtracts it again; both are explicit calls, never tied to train()/eval().
With `lora_bias`, B has a bias too, merged into the base bias. DoRA (`dora.py`) rescales each output
row of the combined weight by a learned magnitude.

`LoraLayer` holds what every LoRA layer shares (per-adapter settings, init, merge, mixed batches);
each layer type (`Linear`, `Embedding`, `Conv1d/2d/3d`, `MultiheadAttention`, `ParamWrapper`, one
sibling module each) builds its own A and B and says how its weight is laid out.

Adapter weights live in fp32 on a half-precision base (unless asked otherwise); the input is cast to
the adapter dtype and the update back to the base output dtype.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from peftcore.errors import PeftWarning
from peftcore.tuners.base_layer import BaseTunerLayer, adapter_dtype_for, features_of
from peftcore.tuners.lora import dora
from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.svd_init import is_weight_moving_init, principal_factors


def offload_device(base: nn.Module) -> torch.device | None:
    """The execution device of a layer whose weights accelerate offloads (kept on the meta device and
    brought in by a hook at each forward: cpu_offload, disk offload, device_map with offload), else None."""
    hook: Any = getattr(base, "_hf_hook", None)
    weight = getattr(base, "weight", None)
    if hook is None or not isinstance(weight, torch.Tensor) or weight.device.type != "meta":
        return None
    hooks = getattr(hook, "hooks", None) or [hook]  # a SequentialHook holds several
    for candidate in hooks:
        device = getattr(candidate, "execution_device", None)
        if device is not None:
            return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return None


class LoraLayer(BaseTunerLayer):
    """Per-adapter LoRA state and the operations that do not depend on the layer type."""

    adapter_layer_names: tuple[str, ...] = (
        "lora_A",
        "lora_B",
        "lora_embedding_A",
        "lora_embedding_B",
        "lora_magnitude_vector",
    )
    other_param_names: tuple[str, ...] = (
        "r",
        "lora_alpha",
        "scaling",
        "lora_dropout",
        "use_dora",
        "lora_bias",
    )
    # Read in_features / out_features off the wrapped module's type (a layer that knows better says no).
    infer_features = True

    def __init__(self, base_layer: nn.Module, ephemeral_gpu_offload: bool = False, **kwargs: Any) -> None:
        BaseTunerLayer.__init__(self, base_layer)
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        # Floats; tensors after prepare_model_for_compiled_hotswap (so a swap changes no constant).
        self.scaling: dict[str, float | torch.Tensor] = {}
        self.use_dora: dict[str, bool] = {}
        self.lora_bias: dict[str, bool] = {}
        self.lora_dropout = nn.ModuleDict()
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()
        self.lora_magnitude_vector = nn.ModuleDict()
        self.in_features: Any = None
        self.out_features: Any = None
        if self.infer_features:
            self.in_features, self.out_features = features_of(self.get_base_layer())

    # -- to implement per layer type --------------------------------------------------------------
    def _check_update(self, adapter_name: str, r: int, config: LoraConfig) -> None:
        """Raise if this layer type cannot take the adapter (before anything is created)."""

    def _create_adapter(
        self, adapter_name: str, r: int, lora_bias: bool, tensor_kwargs: dict[str, Any]
    ) -> None:
        """Create the adapter's A and B (in `lora_A`/`lora_B` or `lora_embedding_A`/`_B`)."""
        raise NotImplementedError

    def _lora_output(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """The plain (non-DoRA) update `s · B A dropout(x)` for input `x`, in the adapter dtype."""
        raise NotImplementedError

    def _lora_rows(self, adapter_name: str) -> torch.Tensor:
        """`B A` (unscaled) in the row layout of `dora.rows`: one row per output unit."""
        raise NotImplementedError

    def _weight_rows(self, weight: torch.Tensor) -> torch.Tensor:
        """The base weight with one row per output unit (what DoRA normalises)."""
        return weight

    def _weight_from_rows(self, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return rows.reshape(like.shape)

    def _magnitude_shape(self, norm: torch.Tensor) -> torch.Tensor:
        """The DoRA magnitude as stored (HF PEFT's shape for this layer type)."""
        return norm

    # -- adapters ---------------------------------------------------------------------------------
    def update_layer(
        self,
        adapter_name: str,
        r: int,
        lora_alpha: float,
        config: LoraConfig,
        low_cpu_mem_usage: bool = False,
        autocast_adapter_dtype: bool = True,
        **kwargs: Any,
    ) -> None:
        """Add adapter `adapter_name` with rank `r` and alpha `lora_alpha` (other settings from `config`)."""
        if r <= 0:
            raise ValueError(f"`r` should be a positive integer value but the value passed is {r}")
        self._check_update(adapter_name, r, config)
        if config.lora_bias and getattr(self.get_base_layer(), "bias", None) is None:
            warnings.warn(
                f"`lora_bias=True` was passed but the targeted layer of type {type(self.get_base_layer()).__name__} "
                "has no bias. This means that merging LoRA weights won't be possible.",
                PeftWarning,
                stacklevel=2,
            )
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / math.sqrt(r) if config.use_rslora else lora_alpha / r
        self.use_dora[adapter_name] = bool(config.use_dora)
        self.lora_bias[adapter_name] = bool(config.lora_bias)
        dropout = config.lora_dropout
        self.lora_dropout[adapter_name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        weight = self.weight
        device = torch.device("meta") if low_cpu_mem_usage else weight.device
        offloaded = offload_device(self.get_base_layer())
        if offloaded is not None and not low_cpu_mem_usage:
            if config.use_dora:
                raise ValueError(
                    f"use_dora=True needs the base weights of this {type(self.get_base_layer()).__name__} to set its "
                    "magnitude, and they are offloaded (accelerate keeps them on the meta device between "
                    "forwards); load the model without offloading to add a DoRA adapter"
                )
            device = offloaded  # where accelerate runs the layer: the adapter must live (and run) there
        tensor_kwargs: dict[str, Any] = {
            "device": device,
            "dtype": adapter_dtype_for(weight, autocast_adapter_dtype),
        }
        self._create_adapter(adapter_name, r, bool(config.lora_bias), tensor_kwargs)
        if not low_cpu_mem_usage:
            self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        if config.use_dora:
            self._init_dora(adapter_name, tensor_kwargs)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def reset_lora_parameters(self, adapter_name: str, init_lora_weights: bool | str) -> None:
        """(Re)initialise A and B: B = 0 (the identity at start) unless `init_lora_weights` is False."""
        if init_lora_weights is False or adapter_name not in self.lora_A:
            return
        a: Any = self.lora_A[adapter_name]
        b: Any = self.lora_B[adapter_name]
        with torch.no_grad():
            if is_weight_moving_init(init_lora_weights):
                self._move_principal_part(adapter_name, str(init_lora_weights))
            elif init_lora_weights == "orthogonal":
                _orthogonal_pair(a.weight, b.weight)
            else:
                if init_lora_weights == "gaussian":
                    nn.init.normal_(a.weight, std=1.0 / self.r[adapter_name])
                else:
                    nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
                nn.init.zeros_(b.weight)
            if b.bias is not None:
                nn.init.zeros_(b.bias)

    def _move_principal_part(self, adapter_name: str, init: str) -> None:
        """PiSSA / OLoRA (`svd_init.py`): A and B from the base weight, which keeps the residual."""
        base: Any = self.get_base_layer()
        weight = base.weight
        if weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(
                f"Please initialize {init} under float32, float16, or bfloat16 (the weight is {weight.dtype}); "
                "subsequently re-quantize the residual model"
            )
        transposed = bool(getattr(self, "fan_in_fan_out", False))
        w = weight.t() if transposed else weight
        a, b, residual = principal_factors(w, self.r[adapter_name], float(self.scaling[adapter_name]), init)
        lora_a: Any = self.lora_A[adapter_name]
        lora_b: Any = self.lora_B[adapter_name]
        lora_a.weight.data = a.to(lora_a.weight.dtype)
        lora_b.weight.data = b.to(lora_b.weight.dtype)
        residual = residual.t() if transposed else residual
        weight.data = residual.to(weight.dtype).contiguous()

    def _init_dora(self, adapter_name: str, tensor_kwargs: dict[str, Any]) -> None:
        if tensor_kwargs["device"].type == "meta":
            norm = torch.empty(self.out_features or 0, device="meta")
        else:
            with torch.no_grad():
                norm = self._dora_norm(adapter_name, self._base_weight().detach())
        magnitude = self._magnitude_shape(norm).to(
            dtype=tensor_kwargs["dtype"], device=tensor_kwargs["device"]
        )
        self.lora_magnitude_vector[adapter_name] = dora.DoraMagnitude(magnitude.contiguous())

    def _magnitude(self, adapter_name: str) -> torch.Tensor:
        return cast(torch.Tensor, cast(Any, self.lora_magnitude_vector[adapter_name]).weight)

    def adapter_tensor_keys(self, adapter_name: str) -> dict[str, str]:
        """On-disk key → in-memory key (relative to this layer); DoRA's magnitude is saved without `.weight`."""
        keys = super().adapter_tensor_keys(adapter_name)
        if adapter_name in self.lora_magnitude_vector:
            keys.pop("lora_magnitude_vector.weight", None)
            keys["lora_magnitude_vector"] = f"lora_magnitude_vector.{adapter_name}.weight"
        return keys

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)

    def set_scale(self, adapter_name: str, scale: float) -> None:
        """Set the scaling to `scale · alpha / r` (`scale=1` restores the configured scaling)."""
        if adapter_name in self.scaling:
            self.scaling[adapter_name] = scale * self.lora_alpha[adapter_name] / self.r[adapter_name]

    def scale_layer(self, scale: float) -> None:
        """Multiply the scaling of every active adapter by `scale`."""
        for name in self.active_adapters:
            if name in self.scaling:
                self.scaling[name] *= scale

    # -- weights ----------------------------------------------------------------------------------
    def _base_weight(self) -> torch.Tensor:
        """The base weight as float numbers in the base layer's layout: what merging and DoRA read.
        A quantized base (bnb.py) dequantizes it; its raw codes are never read as numbers."""
        return self.weight

    def _store_base_weight(self, new: torch.Tensor) -> None:
        """Write `new` (from `_base_weight` plus or minus an update) back as the base weight."""
        weight = self.weight
        weight.data.copy_(new.to(weight.dtype))

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """The update `s · B A` in the base weight's layout and the adapter's dtype."""
        rows = self._lora_rows(adapter_name)
        return self._weight_from_rows(rows * self.scaling[adapter_name], self.weight)

    def _dora_norm(self, adapter_name: str, weight: torch.Tensor) -> torch.Tensor:
        lora = self._lora_rows(adapter_name).detach()
        return dora.weight_norm(self._weight_rows(weight).to(lora.dtype), lora, self.scaling[adapter_name])

    def _merged_weight(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name not in self.lora_magnitude_vector:
            delta = self.get_delta_weight(name)
            return weight.to(delta.dtype) + delta
        lora = self._lora_rows(name)
        magnitude = self._magnitude(name).reshape(-1)
        merged, norm = dora.merge_rows(
            self._weight_rows(weight).to(lora.dtype), lora, self.scaling[name], magnitude
        )
        cast(Any, self.lora_magnitude_vector[name]).merge_norm = norm
        return self._weight_from_rows(merged, weight)

    def _unmerged_weight(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name not in self.lora_magnitude_vector:
            delta = self.get_delta_weight(name)
            return weight.to(delta.dtype) - delta
        lora = self._lora_rows(name)
        box: Any = self.lora_magnitude_vector[name]
        norm, box.merge_norm = box.merge_norm, None
        magnitude = self._magnitude(name).reshape(-1)
        rows = dora.unmerge_rows(
            self._weight_rows(weight).to(lora.dtype), lora, self.scaling[name], magnitude, norm
        )
        return self._weight_from_rows(rows, weight)

    def _merged_by_tied_source(self) -> bool:
        """True for a head whose adapter is tied to the input embedding's and whose base weight is the
        embedding's (ensure_weight_tying): merging through the embedding already changes that weight."""
        source: Any = getattr(self, "_tied_lora_source", None)
        return bool(source) and source[0].get_base_layer().weight is self.get_base_layer().weight

    def _check_mergeable(self, adapter_name: str) -> None:
        if self.lora_bias.get(adapter_name) and getattr(self.get_base_layer(), "bias", None) is None:
            raise RuntimeError(
                "Impossible to merge LoRA with `lora_bias=True` because the base layer has no bias. Train the "
                "adapter with lora_bias=False to merge it"
            )

    def _bias_delta(self, adapter_name: str) -> torch.Tensor | None:
        if not self.lora_bias.get(adapter_name):
            return None
        bias: torch.Tensor | None = cast(Any, self.lora_B[adapter_name]).bias
        return None if bias is None else bias * self.scaling[adapter_name]

    def merge(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> None:
        """Fold adapters into the base weight (and bias). Already-merged adapters are skipped (idempotent).

        Args:
            safe_merge: compute the result first and refuse it if it is not finite.
            adapter_names: the adapters to merge; default: the active ones.
        """
        base: Any = self.get_base_layer()
        if offload_device(base) is not None and self.adapters_to_merge(adapter_names):
            raise ValueError(
                f"cannot merge into this {type(base).__name__}: its weights are offloaded by accelerate (on the meta "
                "device between forwards), so there is no weight to merge into. Load the base model without "
                "offloading to merge, or keep the adapter unmerged (it runs on the layer's execution device)"
            )
        for name in self.adapters_to_merge(adapter_names):
            if name not in self.r:
                continue
            if self._merged_by_tied_source():
                self.merged_adapters.append(name)  # the shared weight is merged once, by the embedding
                continue
            self._check_mergeable(name)
            with torch.no_grad():
                new_weight = self._merged_weight(name, self._base_weight().detach())
                delta_b = self._bias_delta(name)
                new_bias = None if delta_b is None else base.bias.detach() + delta_b.to(base.bias.dtype)
                finite = torch.isfinite(new_weight).all() and (
                    new_bias is None or torch.isfinite(new_bias).all()
                )
                if safe_merge and not finite:
                    if name in self.lora_magnitude_vector:
                        cast(Any, self.lora_magnitude_vector[name]).merge_norm = None
                    raise ValueError(
                        f"NaNs detected in the merged weights. The adapter {name} seems to be broken: its weights "
                        "are not finite; the base weights were left unchanged"
                    )
                self._store_base_weight(new_weight)
                if new_bias is not None:
                    base.bias.data.copy_(new_bias)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Subtract every merged adapter from the base weight, newest first."""
        base: Any = self.get_base_layer()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name not in self.r or self._merged_by_tied_source():
                continue
            with torch.no_grad():
                self._store_base_weight(self._unmerged_weight(name, self._base_weight().detach()))
                delta_b = self._bias_delta(name)
                if delta_b is not None:
                    base.bias.data.sub_(delta_b.to(base.bias.dtype))

    # -- forward helpers --------------------------------------------------------------------------
    def _check_adapter_names(self, x: torch.Tensor, adapter_names: Sequence[str]) -> None:
        if len(adapter_names) != len(x):
            raise ValueError(
                "Length of `adapter_names` should be the same as the number of inputs, but got "
                f"{len(adapter_names)} and {len(x)} respectively; pass one adapter name per batch row"
            )

    def _mixed_batch_forward(
        self, x: torch.Tensor, *args: Any, adapter_names: Sequence[str], **kwargs: Any
    ) -> torch.Tensor:
        """Row i of the batch gets adapter `adapter_names[i]` ("__base__": none)."""
        self._check_adapter_names(x, adapter_names)
        result = self.base_layer(x, *args, **kwargs)
        for name in dict.fromkeys(adapter_names):
            if name == "__base__" or name not in self.r:
                continue
            rows = [i for i, n in enumerate(adapter_names) if n == name]
            update = self._lora_output(name, x[rows])
            result[rows] = result[rows] + update.to(result.dtype)
        return result

    def extra_repr(self) -> str:
        parts = [f"in_features={self.in_features}, out_features={self.out_features}"]
        parts += [f"{n}: r={self.r[n]}, s={float(self.scaling[n]):g}" for n in self.r]
        return ", ".join(parts)

    def __repr__(self) -> str:
        return "lora." + nn.Module.__repr__(cast(nn.Module, self))


def _orthogonal_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    """A (r × in) and B (out × r), both non-zero, with B A = 0: their shared rank-r space is split in
    two orthogonal halves, A's rows live in one and B's columns read from the other."""
    r = a.shape[0]
    q, _ = torch.linalg.qr(torch.randn(r, r))
    first, second = q[:, : r // 2], q[:, r // 2 :]  # (r, r/2) each, first ⟂ second
    a.copy_((first @ torch.randn(r // 2, a.shape[1]) / 10.0).to(a.dtype))
    b.copy_((torch.randn(b.shape[0], r - r // 2) @ second.t() / 10.0).to(b.dtype))
