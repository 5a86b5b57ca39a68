"""AdaLoRA's rank allocator: which SVD triplets survive, by a smoothed sensitivity score.

For every adapter tensor entry w, after each optimizer step (gradients still present):

    I = |w · ∂L/∂w|,   Ī ← β1 Ī + (1 − β1) I,   U ← β2 U + (1 − β2) |I − Ī|,   s = Ī · U

A triplet i of a layer scores s(E_i) + mean_j s(A_ij) + mean_j s(B_ji). The budget (total kept
triplets over all layers) falls from Σ init_r to target_r · layers along a cubic schedule:

    step ≤ tinit:                 full budget, nothing pruned
    tinit < step < T − tfinal:    b = target + (init − target) · (1 − (step − tinit) / (T − tfinal − tinit))³,
                                  pruned every deltaT steps
    step ≥ T − tfinal:            target budget; the mask is frozen and re-applied every step

Pruning zeroes E_i of every triplet scoring at or below the (init − b)-th smallest score, and
records per layer which triplets are kept (`rank_pattern`, keyed `<module>.lora_E`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from peftcore.tuners.adalora.layer import AdaLoraLayer

_PARTS = ("lora_A", "lora_B", "lora_E")


class RankAllocator:
    """Sensitivity statistics and the budget schedule of one trainable adapter."""

    def __init__(self, layers: dict[str, AdaLoraLayer], config: Any, adapter_name: str) -> None:
        self.config = config
        self.adapter_name = adapter_name
        self.layers = layers
        self.init_bgt = sum(layer.r[adapter_name] for layer in layers.values())
        self.target_bgt = config.target_r * len(layers)
        self.reset_ipt()

    def reset_ipt(self) -> None:
        self.ipt: dict[tuple[str, str], torch.Tensor] = {}
        self.exp_avg_ipt: dict[tuple[str, str], torch.Tensor] = {}
        self.exp_avg_unc: dict[tuple[str, str], torch.Tensor] = {}

    def _tensors(self) -> Iterator[tuple[tuple[str, str], torch.Tensor]]:
        for name, layer in self.layers.items():
            for part in _PARTS:
                yield (name, part), getattr(layer, part)[self.adapter_name]

    def budget_schedule(self, step: int) -> tuple[int, bool]:
        """(budget, whether to prune at this step)."""
        c = self.config
        if step <= c.tinit:
            return self.init_bgt, False
        if step > c.total_step - c.tfinal:
            return self.target_bgt, True
        remaining = 1 - (step - c.tinit) / (c.total_step - c.tfinal - c.tinit)
        budget = int((self.init_bgt - self.target_bgt) * remaining**3 + self.target_bgt)
        return budget, step % c.deltaT == 0

    @torch.no_grad()
    def update_ipt(self) -> None:
        b1, b2 = self.config.beta1, self.config.beta2
        for key, param in self._tensors():
            if param.grad is None:
                continue
            if key not in self.ipt:
                self.exp_avg_ipt[key] = torch.zeros_like(param)
                self.exp_avg_unc[key] = torch.zeros_like(param)
            self.ipt[key] = (param * param.grad).abs()
            self.exp_avg_ipt[key] = b1 * self.exp_avg_ipt[key] + (1 - b1) * self.ipt[key]
            self.exp_avg_unc[key] = (
                b2 * self.exp_avg_unc[key] + (1 - b2) * (self.ipt[key] - self.exp_avg_ipt[key]).abs()
            )

    def _triplet_scores(self) -> dict[str, torch.Tensor]:
        scores = {}
        for name in self.layers:
            s = {part: self.exp_avg_ipt[name, part] * self.exp_avg_unc[name, part] for part in _PARTS}
            per_a = s["lora_A"].mean(dim=1)
            per_b = s["lora_B"].mean(dim=0)
            scores[name] = s["lora_E"].view(-1) + (per_a + per_b)
        return scores

    @torch.no_grad()
    def mask_to_budget(self, budget: int) -> dict[str, list[bool]]:
        """Zero the E entries of the lowest-scoring triplets so that about `budget` survive."""
        scores = self._triplet_scores()
        cut = self.init_bgt - budget
        if cut <= 0 or not scores:
            return {f"{name}.lora_E": [True] * self.layers[name].r[self.adapter_name] for name in self.layers}
        threshold = torch.kthvalue(torch.cat(list(scores.values())), k=cut)[0].item()
        pattern = {}
        for name, score in scores.items():
            drop = score <= threshold
            self.layers[name].lora_E[self.adapter_name].masked_fill_(drop.view(-1, 1), 0.0)
            pattern[f"{name}.lora_E"] = (~drop).tolist()
        return pattern

    def update_and_allocate(self, step: int, force_mask: bool = False) -> dict[str, list[bool]] | None:
        if step < self.config.total_step - self.config.tfinal:
            self.update_ipt()
        budget, prune = self.budget_schedule(step)
        if prune or force_mask:
            return self.mask_to_budget(budget)
        return None

    @torch.no_grad()
    def mask_using_rank_pattern(self, pattern: dict[str, list[bool]]) -> None:
        for name, layer in self.layers.items():
            keep = pattern.get(f"{name}.lora_E")
            if keep is not None:
                e = layer.lora_E[self.adapter_name]
                e.masked_fill_(~torch.tensor(keep, device=e.device).view(-1, 1), 0.0)
