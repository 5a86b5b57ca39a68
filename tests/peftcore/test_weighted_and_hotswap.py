"""Combining adapters (`add_weighted_adapter`) and replacing an adapter's weights in place (hot-swapping)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from peftcore import LoraConfig, PeftModel, get_peft_model
from peftcore.tuners.lora.hotswap import hotswap_adapter, prepare_model_for_compiled_hotswap
from peftcore.tuners.lora.weighted import combine


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(10, 20)
        self.lin1 = nn.Linear(20, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lin1(torch.relu(self.lin0(x))))


def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP().eval()


X = torch.randn(5, 10, generator=torch.Generator().manual_seed(1))


def adapters(r_b: int = 8) -> PeftModel:
    torch.manual_seed(1)
    pm = get_peft_model(
        mlp(), LoraConfig(target_modules=["lin0", "lin1"], init_lora_weights=False, lora_alpha=16), "a"
    )
    torch.manual_seed(2)
    pm.add_adapter("b", LoraConfig(target_modules=["lin0", "lin1"], r=r_b, init_lora_weights=False))
    return pm.eval()


def delta(pm: PeftModel, name: str, module: str = "lin0") -> torch.Tensor:
    return getattr(pm.get_base_model(), module).get_delta_weight(name)


def test_cat_is_exactly_the_weighted_sum_of_the_updates() -> None:
    pm = adapters(r_b=4)
    pm.add_weighted_adapter(["a", "b"], [0.5, -2.0], "mix", combination_type="cat")
    assert pm.get_base_model().lin0.r["mix"] == 12
    expected = 0.5 * delta(pm, "a") - 2.0 * delta(pm, "b")
    torch.testing.assert_close(delta(pm, "mix"), expected, atol=1e-5, rtol=1e-5)
    pm.base_model.set_adapter(["a", "b"])
    both = pm(X)
    pm.add_weighted_adapter(["a", "b"], [1.0, 1.0], "sum", combination_type="cat")
    pm.set_adapter("sum")
    torch.testing.assert_close(pm(X), both, atol=1e-5, rtol=1e-5)


def test_linear_negates_and_cancels() -> None:
    pm = adapters()
    pm.add_weighted_adapter(["a"], [-1.0], "neg", combination_type="linear")
    torch.testing.assert_close(delta(pm, "neg"), -delta(pm, "a"), atol=1e-6, rtol=1e-6)
    pm.add_weighted_adapter(["a", "a"], [1.0, -1.0], "zero", combination_type="linear")
    torch.testing.assert_close(delta(pm, "zero"), torch.zeros_like(delta(pm, "a")))


def test_svd_keeps_the_largest_rank_and_approximates_the_sum() -> None:
    pm = adapters(r_b=4)
    pm.add_weighted_adapter(["a"], [0.5], "halved")  # svd by default
    torch.testing.assert_close(delta(pm, "halved"), 0.5 * delta(pm, "a"), atol=1e-4, rtol=1e-4)
    pm.add_weighted_adapter(["a", "b"], [1.0, 1.0], "svd", combination_type="svd", svd_rank=12)
    assert pm.get_base_model().lin0.r["svd"] == 12
    torch.testing.assert_close(delta(pm, "svd"), delta(pm, "a") + delta(pm, "b"), atol=1e-4, rtol=1e-4)
    for kind in ("ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd"):
        pm.add_weighted_adapter(["a", "b"], [1.0, 1.0], kind, combination_type=kind, density=0.5)
        assert pm.get_base_model().lin0.r[kind] == 8


def test_factor_merges_need_equal_ranks_and_a_density() -> None:
    pm = adapters(r_b=4)
    for kind in ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"):
        with pytest.raises(ValueError, match=r"same r value|needs density"):
            pm.add_weighted_adapter(["a", "b"], [1.0, 1.0], f"x_{kind}", combination_type=kind, density=0.5)
    with pytest.raises(ValueError, match="needs density"):
        adapters().add_weighted_adapter(["a", "b"], [1.0, 1.0], "t", combination_type="ties")
    assert "x_linear" not in pm.peft_config


def test_task_arithmetic_rules_on_known_tensors() -> None:
    tensors = torch.tensor([[1.0, -2.0, 3.0, 0.5], [-1.0, 4.0, 0.25, 0.0]])
    weights = torch.tensor([1.0, 1.0])
    linear = combine(tensors, weights, "linear", 1.0, "total")
    torch.testing.assert_close(linear, torch.tensor([0.0, 2.0, 3.25, 0.5]))
    # magnitude pruning keeps the largest half of each tensor: [0, -2, 3, 0] and [-1, 4, 0, 0]
    pruned = combine(tensors, weights, "magnitude_prune", 0.5, "total")
    torch.testing.assert_close(pruned, torch.tensor([-1.0, 2.0, 3.0, 0.0]))
    # ties: per entry the sign of the sum wins; the values agreeing with it are averaged
    ties = combine(tensors, weights, "ties", 1.0, "total")
    torch.testing.assert_close(ties, torch.tensor([1.0, 4.0, 1.625, 0.5]))


def test_modules_to_save_of_a_single_source_carry_over_and_shared_ones_refuse() -> None:
    pm = get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], modules_to_save=["head"]), "a")
    pm.add_adapter("b", LoraConfig(target_modules=["lin0"]))
    pm.add_weighted_adapter(["a", "b"], [1.0, 1.0], "mix", combination_type="cat")
    head = pm.get_base_model().head
    assert set(head.modules_to_save) == {"a", "mix"}
    pm.add_adapter("c", LoraConfig(target_modules=["lin0"], modules_to_save=["head"]))
    with pytest.raises(ValueError, match="target the same module with modules_to_save, but found 1"):
        pm.add_weighted_adapter(["a", "c"], [1.0, 1.0], "bad", combination_type="cat")


# -- hot-swapping ---------------------------------------------------------------------------------
def saved(tmp_path: Path, name: str, seed: int, **kw: object) -> tuple[Path, torch.Tensor]:
    torch.manual_seed(seed)
    pm = get_peft_model(
        mlp(), LoraConfig(init_lora_weights=False, **{"target_modules": ["lin0", "lin1"], **kw})
    )  # type: ignore[arg-type]
    pm.eval()
    pm.save_pretrained(tmp_path / name)
    return tmp_path / name, pm(X)


def test_hotswap_replaces_values_in_place(tmp_path: Path) -> None:
    first, out0 = saved(tmp_path, "a", 0)
    second, out1 = saved(tmp_path, "b", 1, lora_alpha=32)
    model = PeftModel.from_pretrained(mlp(), first)
    params_before = {n: p for n, p in model.named_parameters()}
    hotswap_adapter(model, second, adapter_name="default")
    torch.testing.assert_close(model(X), out1, atol=1e-6, rtol=1e-6)
    assert all(p is params_before[n] for n, p in model.named_parameters()), "the same tensors, new values"
    hotswap_adapter(model, first, adapter_name="default")
    torch.testing.assert_close(model(X), out0, atol=1e-6, rtol=1e-6)


def test_hotswap_zeroes_what_the_new_adapter_lacks_and_refuses_extra_modules(tmp_path: Path) -> None:
    first, _ = saved(tmp_path, "a", 0)
    only_lin0, out = saved(tmp_path, "b", 1, target_modules=["lin0"])
    model = PeftModel.from_pretrained(mlp(), first)
    hotswap_adapter(model, only_lin0, adapter_name="default")
    assert torch.count_nonzero(model.get_base_model().lin1.lora_A["default"].weight) == 0
    torch.testing.assert_close(model(X), out, atol=1e-6, rtol=1e-6)
    narrow = PeftModel.from_pretrained(mlp(), only_lin0)
    with pytest.raises(
        RuntimeError, match=re.escape("unexpected keys found: base_model.model.lin1.lora_A.default.weight")
    ):
        hotswap_adapter(narrow, first, adapter_name="default")


def test_prepared_model_swaps_ranks_without_changing_shapes(tmp_path: Path) -> None:
    small, out_small = saved(tmp_path, "a", 0, r=4)
    large, out_large = saved(tmp_path, "b", 1, r=12, lora_alpha=6)
    model = PeftModel.from_pretrained(mlp(), small)
    prepare_model_for_compiled_hotswap(model, target_rank=12, config=model.peft_config)
    assert model.peft_config["default"].r == 12
    torch.testing.assert_close(model(X), out_small, atol=1e-6, rtol=1e-6)  # zero padding changes nothing
    shapes = {n: p.shape for n, p in model.named_parameters()}
    scaling = model.get_base_model().lin0.scaling["default"]
    assert isinstance(scaling, torch.Tensor)
    hotswap_adapter(model, large, adapter_name="default")
    torch.testing.assert_close(model(X), out_large, atol=1e-6, rtol=1e-6)
    hotswap_adapter(model, small, adapter_name="default")
    torch.testing.assert_close(model(X), out_small, atol=1e-6, rtol=1e-6)
    assert {n: p.shape for n, p in model.named_parameters()} == shapes
    with pytest.raises(ValueError, match="original rank is larger"):
        prepare_model_for_compiled_hotswap(PeftModel.from_pretrained(mlp(), large), target_rank=8)
