"""The in-place LoRA update (added into the base output) is invisible: same values and gradients as the
plain formula, and hooks on the base layer see the untouched base output."""

from __future__ import annotations

import torch
from torch import nn

from peftcore import LoraConfig
from peftcore.tuners.lora.linear import Linear


def _layer(seed: int = 0) -> Linear:
    torch.manual_seed(seed)
    base = nn.Linear(16, 12).requires_grad_(False)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False)
    return Linear(base, "default", config=config, r=4, lora_alpha=8)


def _reference(layer: Linear, x: torch.Tensor) -> torch.Tensor:
    base = layer.base_layer
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    return base(x) + layer.scaling["default"] * (x @ a.t() @ b.t())


def test_inplace_update_matches_formula_values_and_gradients() -> None:
    layer = _layer()
    x1 = torch.randn(3, 5, 16, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    out = layer(x1)
    out.pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    layer.zero_grad()
    ref = _reference(layer, x2)
    ref.pow(2).sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=1e-6)
    assert set(grads) == {"lora_A.default.weight", "lora_B.default.weight"}
    for name, p in layer.named_parameters():
        if name in grads:
            torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-6)


def test_hooks_on_base_layer_see_the_base_output_only() -> None:
    layer = _layer()
    seen: list[torch.Tensor] = []
    layer.base_layer.register_forward_hook(lambda _m, _i, o: seen.append(o))
    x = torch.randn(2, 16)
    out = layer(x)
    with torch.no_grad():
        base_out = nn.functional.linear(x, layer.base_layer.weight, layer.base_layer.bias)
    torch.testing.assert_close(seen[0], base_out, atol=0, rtol=0)
    assert not torch.allclose(out, base_out)
