"""LoRA layers: wrappers that hold the original `base_layer` and add a low-rank update beside it.

    x ──► base_layer (frozen W, b) ──────────────────────────────┐
    │                                                           (+) ──► y
    └──► dropout ──► A (r × in) ──► B (out × r) ──► × scaling ───┘

    y = W x + b + s · B A dropout(x),   s = lora_alpha / r   (or lora_alpha / sqrt(r), rsLoRA)

Merging folds the update into the base weight, `W ← W + s · B A` (transposed for fan-in-fan-out
weights), and unmerging subtracts it again; both are explicit calls, never tied to train()/eval().

DoRA (weight-decomposed LoRA) keeps a magnitude vector m (one entry per output row) and rescales the
combined weight row-wise: `W' = m · (W + sBA) / ‖W + sBA‖`. The norm is detached in forward.

Adapter weights live in fp32 on a half-precision base (unless asked otherwise); the input is cast to
the adapter dtype and the update back to the base output dtype.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftcore.tuners.lora.config import InitLora


def adapter_dtype_for(base_weight: torch.Tensor, autocast_adapter_dtype: bool = True) -> torch.dtype:
    """fp32 adapters on a half-precision base; otherwise the base's own float dtype."""
    if base_weight.dtype in (torch.float16, torch.bfloat16) and autocast_adapter_dtype:
        return torch.float32
    return base_weight.dtype if base_weight.is_floating_point() else torch.float32


class LoraLayer(nn.Module):
    """Shared bookkeeping: adapters by name, which are active, which are merged into the base."""

    # Containers holding per-adapter tensors; the names are part of the on-disk key format.
    adapter_containers: tuple[str, ...] = ()

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.merged_adapters: list[str] = []
        self.active_adapters: list[str] = []
        self.disable_adapters = False

    # -- views of the wrapped layer, so code that inspects modules keeps working ---------------
    @property
    def weight(self) -> torch.Tensor:
        # nn.Module attribute lookups are typed `Tensor | Module`; every wrapped layer's weight is a tensor.
        return cast(torch.Tensor, self.base_layer.weight)

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base_layer, "bias", None)

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    @property
    def adapter_names(self) -> list[str]:
        return list(self.r)

    def get_base_layer(self) -> nn.Module:
        return self.base_layer

    # -- per-adapter state ------------------------------------------------------------------------
    def _register_scaling(self, adapter_name: str, r: int, alpha: float, use_rslora: bool) -> None:
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = alpha
        self.scaling[adapter_name] = alpha / math.sqrt(r) if use_rslora else alpha / r

    def set_active_adapters(self, names: list[str], trainable: bool) -> None:
        """Activate `names` (those this layer holds); only active adapters require grad."""
        self.active_adapters = [n for n in names if n in self.r]
        for container in self.adapter_containers:
            for key, value in getattr(self, container).items():
                params = [value] if isinstance(value, nn.Parameter) else list(value.parameters())
                for p in params:
                    p.requires_grad_(trainable and key in self.active_adapters)

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name in self.merged_adapters:
            self.unmerge([adapter_name])
        for container in self.adapter_containers:
            box = getattr(self, container)
            if adapter_name in box:
                del box[adapter_name]
        for table in (self.r, self.lora_alpha, self.scaling):
            table.pop(adapter_name, None)
        self.active_adapters = [n for n in self.active_adapters if n != adapter_name]

    def update_layer(
        self,
        adapter_name: str,
        r: int,
        lora_alpha: float,
        lora_dropout: float,
        init_lora_weights: InitLora,
        use_rslora: bool,
        use_dora: bool,
        autocast_adapter_dtype: bool = True,
    ) -> None:
        """Add adapter `adapter_name` to this layer (each layer type builds its own A and B)."""
        raise NotImplementedError

    # -- merging ----------------------------------------------------------------------------------
    def delta_weight(self, adapter_name: str) -> torch.Tensor:
        """The update `s · BA` in the base weight's layout and the adapter's dtype."""
        raise NotImplementedError

    def merge(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        """Fold adapters into the base weight. Already-merged adapters are skipped (idempotent)."""
        names = self.active_adapters if adapter_names is None else adapter_names
        weight = self.weight
        for name in names:
            if name not in self.r:
                continue
            if name in self.merged_adapters:
                warnings.warn(f"adapter {name!r} is already merged; skipping", stacklevel=3)
                continue
            with torch.no_grad():
                new_weight = self._merged_weight(name, weight.detach())
                if safe_merge and not torch.isfinite(new_weight).all():
                    raise ValueError(
                        f"merging adapter {name!r} gives non-finite weights in {type(self.base_layer).__name__}; "
                        "the base weights were left unchanged"
                    )
                weight.data.copy_(new_weight.to(weight.dtype))
            self.merged_adapters.append(name)

    def unmerge(self, adapter_names: list[str] | None = None) -> None:
        """Subtract merged adapters from the base weight, newest first."""
        names = list(self.merged_adapters) if adapter_names is None else list(adapter_names)
        weight = self.weight
        for name in reversed(self.merged_adapters[:]):
            if name not in names:
                continue
            with torch.no_grad():
                weight.data.copy_(self._unmerged_weight(name, weight.detach()).to(weight.dtype))
            self.merged_adapters.remove(name)

    def _merged_weight(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        delta = self.delta_weight(name)
        return (weight.to(delta.dtype) + delta) if delta.dtype != weight.dtype else weight + delta

    def _unmerged_weight(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        delta = self.delta_weight(name)
        return (weight.to(delta.dtype) - delta) if delta.dtype != weight.dtype else weight - delta

    def _skip_adapters(self) -> bool:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return True
        return not self.active_adapters

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: r={self.r[n]}, s={self.scaling[n]:g}" for n in self.r)


class Linear(LoraLayer):
    """LoRA on `nn.Linear` and GPT-2 style `Conv1D` (weight stored (in, out): `fan_in_fan_out`)."""

    adapter_containers = ("lora_A", "lora_B", "lora_dropout", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool) -> None:
        super().__init__(base_layer)
        self.fan_in_fan_out = fan_in_fan_out
        w = self.weight
        self.in_features, self.out_features = (
            (w.shape[0], w.shape[1]) if fan_in_fan_out else (w.shape[1], w.shape[0])
        )
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.lora_magnitude_vector = nn.ParameterDict()
        self._dora_norm_at_merge: dict[str, torch.Tensor] = {}

    def update_layer(
        self,
        adapter_name: str,
        r: int,
        lora_alpha: float,
        lora_dropout: float,
        init_lora_weights: InitLora,
        use_rslora: bool,
        use_dora: bool,
        autocast_adapter_dtype: bool = True,
    ) -> None:
        w = self.weight
        kw: dict[str, Any] = {"device": w.device, "dtype": adapter_dtype_for(w, autocast_adapter_dtype)}
        self._register_scaling(adapter_name, r, lora_alpha, use_rslora)
        self.lora_A[adapter_name] = nn.Linear(self.in_features, r, bias=False, **kw)
        self.lora_B[adapter_name] = nn.Linear(r, self.out_features, bias=False, **kw)
        self.lora_dropout[adapter_name] = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        a, b = _linear(self.lora_A, adapter_name), _linear(self.lora_B, adapter_name)
        _init_pair(a.weight, b.weight, init_lora_weights, r)
        if use_dora:
            with torch.no_grad():
                norm = self._dora_weight_norm(adapter_name, w.detach())
            self.lora_magnitude_vector[adapter_name] = nn.Parameter(norm.to(kw["dtype"]))

    def _base_weight_out_in(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.t() if self.fan_in_fan_out else weight

    def _lora_product(self, adapter_name: str) -> torch.Tensor:
        a, b = _linear(self.lora_A, adapter_name), _linear(self.lora_B, adapter_name)
        return b.weight @ a.weight  # (out, in)

    def _dora_weight_norm(self, adapter_name: str, weight: torch.Tensor) -> torch.Tensor:
        lora = self._lora_product(adapter_name).detach()
        combined = self._base_weight_out_in(weight).to(lora.dtype) + self.scaling[adapter_name] * lora
        return torch.linalg.norm(combined, dim=1)

    def delta_weight(self, adapter_name: str) -> torch.Tensor:
        delta = self._lora_product(adapter_name) * self.scaling[adapter_name]
        return delta.t() if self.fan_in_fan_out else delta

    def _merged_weight(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name not in self.lora_magnitude_vector:
            return super()._merged_weight(name, weight)
        norm = self._dora_weight_norm(name, weight)
        self._dora_norm_at_merge[name] = norm
        combined = self._base_weight_out_in(weight).to(norm.dtype) + self.scaling[name] * self._lora_product(
            name
        )
        merged = (self.lora_magnitude_vector[name] / norm).unsqueeze(1) * combined
        return merged.t() if self.fan_in_fan_out else merged

    def _unmerged_weight(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name not in self.lora_magnitude_vector:
            return super()._unmerged_weight(name, weight)
        norm = self._dora_norm_at_merge.pop(name)
        merged = self._base_weight_out_in(weight).to(norm.dtype)
        original = merged / (self.lora_magnitude_vector[name] / norm).unsqueeze(1)
        original = original - self.scaling[name] * self._lora_product(name)
        return original.t() if self.fan_in_fan_out else original

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        # Before the base forward: disabling adapters on a merged layer unmerges them first.
        if self._skip_adapters():
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        # Adding each update into `result` in place saves a copy of the whole output per adapter.
        owned = not (args or kwargs) and self._owns_base_output()
        for name in self.active_adapters:
            if name in self.merged_adapters:
                continue
            lora_A = _linear(self.lora_A, name).weight
            lora_B = _linear(self.lora_B, name).weight
            scaling = self.scaling[name]
            xa = x if x.dtype == lora_A.dtype else x.to(lora_A.dtype)
            xa = self.lora_dropout[name](xa)
            if name in self.lora_magnitude_vector:
                result = result + self._dora_update(name, x, xa, result).to(result.dtype)
            elif result.dtype == lora_B.dtype:
                result = self._add_lora_gemm(result, F.linear(xa, lora_A), lora_B, scaling, owned)
            else:
                # The GEMM's output is fresh and not kept for backward: scaling it in place is safe.
                update = F.linear(F.linear(xa, lora_A), lora_B).mul_(scaling).to(result.dtype)
                result = result.add_(update) if owned else result + update
            owned = True  # from here on `result` was created by this forward
        return result

    def _add_lora_gemm(
        self, result: torch.Tensor, h: torch.Tensor, lora_B: torch.Tensor, scaling: float, owned: bool
    ) -> torch.Tensor:
        """`result + s · h Bᵀ` as one GEMM over the rows: no separate scale or add over the output."""
        rows, r = (-1, result.shape[-1]), h.shape[-1]
        if not (owned and result.is_contiguous()):
            flat = torch.addmm(result.reshape(rows), h.reshape(-1, r), lora_B.t(), alpha=scaling)
            return flat.view(result.shape)
        # `_unsafe_view` is a reshape that autograd does not track as a view (as torch.matmul uses it):
        # an in-place update through a tracked view would make backward copy the whole gradient.
        flat = torch.ops.aten._unsafe_view(result, rows)
        flat.addmm_(h.reshape(-1, r), lora_B.t(), alpha=scaling)
        return torch.ops.aten._unsafe_view(flat, result.shape)

    def _owns_base_output(self) -> bool:
        """True when updating the base output in place is invisible to everyone else.

        A plain nn.Linear keeps only its input and weight for backward, never its output; with no hooks
        on it (its own or global ones), nothing else holds a reference to that output.
        """
        base = self.base_layer
        if type(base) is not nn.Linear:
            return False
        own = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        if any(getattr(base, attr, None) for attr in own):
            return False
        module = nn.modules.module
        return not any(getattr(module, f"_global{attr}", None) for attr in own)

    def _dora_update(
        self, name: str, x: torch.Tensor, xa: torch.Tensor, result: torch.Tensor
    ) -> torch.Tensor:
        """(m/‖W+sBA‖ − 1)·(W x) + (m/‖W+sBA‖)·s·B A x, with W x recomputed when dropout is active."""
        weight = self.weight
        magnitude = self.lora_magnitude_vector[name]
        norm = self._dora_weight_norm(name, weight.detach()).detach()
        scale = (magnitude / norm).view(*([1] * (result.dim() - 1)), -1)
        lora_out = F.linear(
            F.linear(xa, _linear(self.lora_A, name).weight), _linear(self.lora_B, name).weight
        )
        if isinstance(self.lora_dropout[name], nn.Identity) or not self.training:
            base_out = result.to(magnitude.dtype)
            if self.bias is not None:
                base_out = base_out - self.bias.to(magnitude.dtype)
        else:
            base_out = F.linear(xa, self._base_weight_out_in(weight).to(xa.dtype))
        return (scale - 1) * base_out + scale * lora_out * self.scaling[name]


class Embedding(LoraLayer):
    """LoRA on `nn.Embedding`: `lora_embedding_A` (r × vocab), `lora_embedding_B` (dim × r)."""

    adapter_containers = ("lora_embedding_A", "lora_embedding_B")

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()

    def update_layer(
        self,
        adapter_name: str,
        r: int,
        lora_alpha: float,
        lora_dropout: float,
        init_lora_weights: InitLora,
        use_rslora: bool,
        use_dora: bool,
        autocast_adapter_dtype: bool = True,
    ) -> None:
        if use_dora:
            raise ValueError(
                "use_dora=True is not supported on nn.Embedding; exclude embeddings or set use_dora=False"
            )
        base = self.base_layer
        assert isinstance(base, nn.Embedding)
        kw: dict[str, Any] = {
            "device": base.weight.device,
            "dtype": adapter_dtype_for(base.weight, autocast_adapter_dtype),
        }
        self._register_scaling(adapter_name, r, lora_alpha, use_rslora)
        a = torch.empty(r, base.num_embeddings, **kw)
        b = torch.empty(base.embedding_dim, r, **kw)
        if init_lora_weights is False:
            nn.init.normal_(a)
            nn.init.normal_(b)
        else:
            nn.init.zeros_(a)
            nn.init.normal_(b)
        self.lora_embedding_A[adapter_name] = nn.Parameter(a)
        self.lora_embedding_B[adapter_name] = nn.Parameter(b)

    def delta_weight(self, adapter_name: str) -> torch.Tensor:
        a, b = self.lora_embedding_A[adapter_name], self.lora_embedding_B[adapter_name]
        return (b @ a).t() * self.scaling[adapter_name]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self._skip_adapters():
            return result
        base = self.base_layer
        assert isinstance(base, nn.Embedding)
        for name in self.active_adapters:
            if name in self.merged_adapters:
                continue
            a, b = self.lora_embedding_A[name], self.lora_embedding_B[name]
            after_a = F.embedding(
                x,
                a.t(),
                padding_idx=base.padding_idx,
                max_norm=base.max_norm,
                norm_type=base.norm_type,
                scale_grad_by_freq=base.scale_grad_by_freq,
                sparse=base.sparse,
            )
            result = result + ((after_a @ b.t()) * self.scaling[name]).to(result.dtype)
        return result


class Conv2d(LoraLayer):
    """LoRA on `nn.Conv2d`: A is a conv with the base's kernel/stride/padding, B a 1×1 conv."""

    adapter_containers = ("lora_A", "lora_B", "lora_dropout")

    def __init__(self, base_layer: nn.Conv2d) -> None:
        super().__init__(base_layer)
        if base_layer.groups != 1:
            raise ValueError(
                f"LoRA on Conv2d needs groups=1, got groups={base_layer.groups}; exclude this module"
            )
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()

    def update_layer(
        self,
        adapter_name: str,
        r: int,
        lora_alpha: float,
        lora_dropout: float,
        init_lora_weights: InitLora,
        use_rslora: bool,
        use_dora: bool,
        autocast_adapter_dtype: bool = True,
    ) -> None:
        if use_dora:
            raise ValueError(
                "use_dora=True is not supported on nn.Conv2d; exclude conv layers or set use_dora=False"
            )
        base = self.base_layer
        assert isinstance(base, nn.Conv2d)
        kw: dict[str, Any] = {
            "device": base.weight.device,
            "dtype": adapter_dtype_for(base.weight, autocast_adapter_dtype),
        }
        self._register_scaling(adapter_name, r, lora_alpha, use_rslora)
        self.lora_A[adapter_name] = nn.Conv2d(
            base.in_channels,
            r,
            # torch types these on the shared _ConvNd base as tuple[int, ...]; a Conv2d's are pairs.
            cast("tuple[int, int]", base.kernel_size),
            cast("tuple[int, int]", base.stride),
            cast("str | tuple[int, int]", base.padding),
            dilation=cast("tuple[int, int]", base.dilation),
            bias=False,
            padding_mode=base.padding_mode,
            **kw,
        )
        self.lora_B[adapter_name] = nn.Conv2d(r, base.out_channels, (1, 1), (1, 1), bias=False, **kw)
        self.lora_dropout[adapter_name] = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        a, b = _conv2d(self.lora_A, adapter_name), _conv2d(self.lora_B, adapter_name)
        _init_pair(a.weight, b.weight, init_lora_weights, r)

    def delta_weight(self, adapter_name: str) -> torch.Tensor:
        a = _conv2d(self.lora_A, adapter_name).weight  # (r, in, kh, kw)
        b = _conv2d(self.lora_B, adapter_name).weight[:, :, 0, 0]  # (out, r)
        return torch.einsum("or,rihw->oihw", b, a) * self.scaling[adapter_name]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self._skip_adapters():
            return result
        for name in self.active_adapters:
            if name in self.merged_adapters:
                continue
            lora_A, lora_B = _conv2d(self.lora_A, name), _conv2d(self.lora_B, name)
            xa = x if x.dtype == lora_A.weight.dtype else x.to(lora_A.weight.dtype)
            update = lora_B(lora_A(self.lora_dropout[name](xa))) * self.scaling[name]
            result = result + update.to(result.dtype)
        return result


def _linear(box: nn.ModuleDict, name: str) -> nn.Linear:
    """`box[name]` as the nn.Linear it holds (ModuleDict entries are typed as plain Module)."""
    return cast(nn.Linear, box[name])


def _conv2d(box: nn.ModuleDict, name: str) -> nn.Conv2d:
    """`box[name]` as the nn.Conv2d it holds (ModuleDict entries are typed as plain Module)."""
    return cast(nn.Conv2d, box[name])


def _init_pair(a: torch.Tensor, b: torch.Tensor, init: InitLora, r: int) -> None:
    with torch.no_grad():
        if init is False:
            # Both random: the adapter is not the identity (tests use this to make merges non-trivial).
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.kaiming_uniform_(b, a=math.sqrt(5))
            return
        if init == "gaussian":
            nn.init.normal_(a, std=1.0 / r)
        else:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.zeros_(b)


def make_lora_layer(target: nn.Module, fan_in_fan_out: bool, name: str) -> tuple[LoraLayer, bool]:
    """Wrap `target` in the matching LoRA layer; returns the layer and the fan_in_fan_out used.

    Raises:
        ValueError: the module type has no LoRA layer (names the module, its type and what works).
    """
    if isinstance(target, nn.Linear):
        if fan_in_fan_out:
            warnings.warn(
                f"{name} is nn.Linear but fan_in_fan_out=True; using fan_in_fan_out=False", stacklevel=3
            )
        return Linear(target, fan_in_fan_out=False), False
    if isinstance(target, Conv1D):
        if not fan_in_fan_out:
            warnings.warn(
                f"{name} is a Conv1D (weight stored in x out) but fan_in_fan_out=False; using fan_in_fan_out=True",
                stacklevel=3,
            )
        return Linear(target, fan_in_fan_out=True), True
    if isinstance(target, nn.Embedding):
        return Embedding(target), fan_in_fan_out
    if isinstance(target, nn.Conv2d):
        return Conv2d(target), fan_in_fan_out
    raise ValueError(
        f"target module {name!r} is a {type(target).__name__}, which LoRA cannot wrap; "
        "supported types are nn.Linear, transformers Conv1D, nn.Embedding and nn.Conv2d — "
        "adjust target_modules or exclude_modules"
    )
