"""`add_weighted_adapter`: a new LoRA adapter made from a weighted combination of existing ones.

Two families (HF PEFT's combination types):

- on the factors, without forming ΔW: each adapter contributes `√|w·s| · A` and `sign(w·s)·√|w·s| · B`.
  "cat" stacks them (rank = Σ r; ΔW_new = Σ w·s·B A exactly, it is the sum of the adapters);
  "linear" adds them (same rank needed; exact for one adapter, an approximation otherwise);
  "ties", "dare_linear", "dare_ties", "magnitude_prune" merge them with those task-arithmetic rules.
- on the full updates: ΔW_new = Σ w·ΔW_i (or its ties/dare/pruned merge) factored back to rank k by
  a truncated SVD ("svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd").

The new adapter has `lora_alpha = r`, so its own scaling is 1 and the weights carry everything.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING, Any, cast

import torch

from peftcore.tuners.lora.config import LoraConfig
from peftcore.tuners.lora.layer import LoraLayer

if TYPE_CHECKING:
    from peftcore.tuners.lora.model import LoraModel

_FACTOR_TYPES = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
_SVD_TYPES = ("svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd")
_DENSITY_TYPES = ("ties", "dare_linear", "dare_ties", "magnitude_prune")


# -- task-arithmetic merges of stacked tensors (dim 0 = adapters) ---------------------------------
def _prune_magnitude(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` fraction of largest-magnitude entries of each tensor, zero the rest."""
    flat = t.reshape(t.shape[0], -1)
    k = max(1, int(density * flat.shape[1]))
    top = flat.abs().topk(k, dim=1).indices
    mask = torch.zeros_like(flat).scatter_(1, top, 1.0)
    return (flat * mask).view_as(t)


def _prune_random(t: torch.Tensor, density: float) -> torch.Tensor:
    """DARE: drop each entry with probability 1 − density, rescale the survivors by 1/density."""
    keep = torch.bernoulli(torch.full_like(t, density))
    return t * keep / density


def _majority_sign(t: torch.Tensor, method: str) -> torch.Tensor:
    signs = t.sign()
    if method == "total":
        return (t.sum(dim=0).sign() >= 0).to(t.dtype) * 2 - 1
    if method == "frequency":
        return (signs.sum(dim=0) >= 0).to(t.dtype) * 2 - 1
    raise ValueError(f"majority_sign_method={method!r} must be 'total' or 'frequency'")


def combine(
    tensors: torch.Tensor, weights: torch.Tensor, kind: str, density: float, sign_method: str
) -> torch.Tensor:
    """Merge stacked `tensors` (n, ...) with `weights` (n,) by rule `kind` (linear, ties, dare_*, magnitude_prune)."""
    w = weights.to(tensors.dtype).view(-1, *([1] * (tensors.dim() - 1)))
    if kind == "linear":
        return (tensors * w).sum(dim=0)
    if kind == "magnitude_prune":
        return (_prune_magnitude(tensors, density) * w).sum(dim=0)
    if kind == "dare_linear":
        return (_prune_random(tensors, density) * w).sum(dim=0)
    pruned = _prune_magnitude(tensors, density) if kind == "ties" else _prune_random(tensors, density)
    weighted = pruned * w
    agree = (weighted.sign() == _majority_sign(weighted, sign_method)).to(tensors.dtype)
    total = (weighted * agree).sum(dim=0)
    contributors = (w.abs() * agree * (pruned != 0).to(tensors.dtype)).sum(dim=0)
    return total / contributors.clamp(min=1.0) if kind == "ties" else total


# -- the public operation --------------------------------------------------------------------------
def add_weighted_adapter(
    tuner: LoraModel,
    adapters: list[str],
    weights: list[float],
    adapter_name: str,
    combination_type: str = "svd",
    svd_rank: int | None = None,
    svd_clamp: float | None = None,
    svd_full_matrices: bool = True,
    svd_driver: str | None = None,
    density: float | None = None,
    majority_sign_method: str = "total",
) -> None:
    """Create `adapter_name` = the `weights`-weighted combination of `adapters` (see the module docstring).

    Raises:
        ValueError: unknown adapters or combination type, mismatched lengths, ranks that differ for a
            factor merge, a missing density, DoRA adapters, or modules_to_save shared by two adapters.
    """
    configs = _check_request(tuner, adapters, weights, adapter_name, combination_type, density)
    shared = _shared_saved_modules(tuner, adapters)
    if shared:
        raise ValueError(
            "Cannot add weighted adapters if they target the same module with modules_to_save, but found "
            f"{len(shared)} such instance(s). Modules: {shared}"
        )
    layers = [(name, layer) for name, layer in tuner.tuner_layers() if isinstance(layer, LoraLayer)]
    per_module = {name: [layer.r[a] for a in adapters if a in layer.r] for name, layer in layers}
    per_module = {name: ranks for name, ranks in per_module.items() if ranks}
    if combination_type == "cat":
        new_rank = sum(c.r for c in configs)
        rank_for = {name: sum(ranks) for name, ranks in per_module.items()}
    elif combination_type in _SVD_TYPES:
        new_rank = svd_rank or max(c.r for c in configs)
        rank_for = {name: new_rank for name in per_module}
    else:
        new_rank = configs[0].r
        rank_for = {name: new_rank for name in per_module}
    pattern = {re.escape(name): r for name, r in rank_for.items() if r != new_rank}
    new_config = dataclasses.replace(
        configs[0],
        r=new_rank,
        lora_alpha=new_rank,
        target_modules=sorted(per_module),
        exclude_modules=None,
        layers_to_transform=None,
        layers_pattern=None,
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        modules_to_save=None,
        use_rslora=False,
        init_lora_weights=True,
        target_parameters=None,
        trainable_token_indices=None,
    )
    tuner.inject_adapter(tuner.model, adapter_name, config=new_config)
    _copy_saved_modules(tuner, adapters, adapter_name, new_config)
    for _, layer in layers:
        if adapter_name not in layer.r:
            continue
        with torch.no_grad():
            _fill_layer(
                layer,
                adapters,
                weights,
                adapter_name,
                combination_type,
                svd_clamp,
                svd_full_matrices,
                svd_driver,
                density or 1.0,
                majority_sign_method,
            )


def _check_request(
    tuner: LoraModel,
    adapters: list[str],
    weights: list[float],
    adapter_name: str,
    combination_type: str,
    density: float | None,
) -> list[LoraConfig]:
    if not adapters or len(adapters) != len(weights):
        raise ValueError(
            f"adapters={adapters} and weights={weights} must be non-empty lists of the same length"
        )
    missing = [a for a in adapters if a not in tuner.peft_config]
    if missing:
        raise ValueError(f"Adapter(s) {missing} do not exist; available: {sorted(tuner.peft_config)}")
    from peftcore.persistence import validate_adapter_name

    validate_adapter_name(adapter_name)
    if adapter_name in tuner.peft_config:
        raise ValueError(f"Adapter with name {adapter_name!r} already exists; choose a new adapter_name")
    if combination_type not in ("cat", *_FACTOR_TYPES, *_SVD_TYPES):
        raise ValueError(
            f"combination_type={combination_type!r} is not supported; use one of "
            f"{['cat', *_FACTOR_TYPES, *_SVD_TYPES]}"
        )
    configs = [cast(LoraConfig, tuner.peft_config[a]) for a in adapters]
    if any(c.use_dora for c in configs):
        raise ValueError(
            "add_weighted_adapter does not support DoRA adapters: their magnitudes cannot be combined"
        )
    base_type = combination_type.removesuffix("_svd")
    if base_type in _DENSITY_TYPES and (density is None or not 0.0 < density <= 1.0):
        raise ValueError(
            f"combination_type={combination_type!r} needs density in (0, 1], got density={density!r}"
        )
    if combination_type in _FACTOR_TYPES and len({c.r for c in configs}) != 1:
        raise ValueError(
            f"All adapters must have the same r value when using combination_type={combination_type!r}, got "
            f"r={[c.r for c in configs]}; use combination_type='cat' or an '_svd' type instead"
        )
    return configs


def _shared_saved_modules(tuner: LoraModel, adapters: list[str]) -> list[str]:
    return [
        name
        for name, wrapper in tuner.auxiliary_wrappers()
        if len([a for a in adapters if a in wrapper.adapter_names_held()]) > 1
    ]


def _copy_saved_modules(tuner: LoraModel, adapters: list[str], adapter_name: str, config: LoraConfig) -> None:
    """The new adapter trains in full what its (single) source adapter trained in full, from its values."""
    from peftcore.modules_to_save import ModulesToSaveWrapper

    names = []
    for name, wrapper in tuner.auxiliary_wrappers():
        sources = [a for a in adapters if a in wrapper.adapter_names_held()]
        if sources and isinstance(wrapper, ModulesToSaveWrapper):
            wrapper.update(adapter_name)
            wrapper.modules_to_save[adapter_name].load_state_dict(
                wrapper.modules_to_save[sources[0]].state_dict()
            )
            names.append(name)
    if names:
        config.modules_to_save = names
    tuner._refresh_trainable()


def _factors(layer: LoraLayer, adapter: str, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(√|w·s| · A, sign(w·s)·√|w·s| · B) of one adapter, in the layer's A/B tensor shapes."""
    ws = weight * float(layer.scaling[adapter])
    root = math.sqrt(abs(ws))
    if adapter in layer.lora_A:
        a = cast(Any, layer.lora_A[adapter]).weight
        b = cast(Any, layer.lora_B[adapter]).weight
    else:
        a, b = layer.lora_embedding_A[adapter], layer.lora_embedding_B[adapter]
    return a * root, b * math.copysign(root, ws)


def _targets(layer: LoraLayer, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if name in layer.lora_A:
        return cast(Any, layer.lora_A[name]).weight, cast(Any, layer.lora_B[name]).weight
    return layer.lora_embedding_A[name], layer.lora_embedding_B[name]


def _fill_layer(
    layer: LoraLayer,
    adapters: list[str],
    weights: list[float],
    new: str,
    kind: str,
    svd_clamp: float | None,
    full_matrices: bool,
    driver: str | None,
    density: float,
    sign_method: str,
) -> None:
    target_a, target_b = _targets(layer, new)
    present = [(a, w) for a, w in zip(adapters, weights, strict=True) if a in layer.r]
    if not present:
        target_a.zero_()
        target_b.zero_()
        return
    if kind in _SVD_TYPES:
        deltas = torch.stack([layer._weight_rows(layer.get_delta_weight(a)) for a, _ in present])
        w = torch.tensor([w for _, w in present], dtype=deltas.dtype)
        rule = "linear" if kind == "svd" else kind.removesuffix("_svd")
        delta = combine(deltas, w, rule, density, sign_method)
        new_b, new_a = _svd_factors(delta, target_a.shape[0], svd_clamp, full_matrices, driver)
        target_a.copy_(new_a.reshape(target_a.shape).to(target_a.dtype))
        target_b.copy_(new_b.reshape(target_b.shape).to(target_b.dtype))
        return
    factors = [_factors(layer, a, w) for a, w in present]
    if kind == "cat":
        target_a.copy_(torch.cat([fa for fa, _ in factors], dim=0).to(target_a.dtype))
        target_b.copy_(torch.cat([fb for _, fb in factors], dim=1).to(target_b.dtype))
        return
    ones = torch.ones(len(factors))
    target_a.copy_(combine(torch.stack([fa for fa, _ in factors]), ones, kind, density, sign_method))
    target_b.copy_(combine(torch.stack([fb for _, fb in factors]), ones, kind, density, sign_method))


def _svd_factors(
    delta: torch.Tensor, rank: int, clamp: float | None, full_matrices: bool, driver: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) with B A the best rank-`rank` approximation of `delta` (rows = outputs)."""
    kwargs: dict[str, Any] = {"full_matrices": full_matrices}
    if driver is not None:
        kwargs["driver"] = driver
    u, s, vh = torch.linalg.svd(delta.float(), **kwargs)
    kept = min(rank, s.shape[0])
    b, a = u[:, :kept] * s[:kept], vh[:kept, :]
    if clamp is not None:
        limit = torch.quantile(torch.cat([b.flatten(), a.flatten()]), clamp)
        b, a = b.clamp(-limit, limit), a.clamp(-limit, limit)
    if kept < rank:  # a matrix of lower rank than asked for: the extra factors are zero
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - kept)], dim=1)
        a = torch.cat([a, a.new_zeros(rank - kept, a.shape[1])], dim=0)
    return b, a
