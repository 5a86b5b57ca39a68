"""LoHa and LoKr beyond the transformer matrix of `test_method_*`: convolutions (flattened and the
effective-conv2d core form), LoKr's factor layouts, the dropouts, and refusals. Differential cases
load each library's file in the other (HF `peft` is a test-only oracle)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import peftcore
from peftcore.tuners.lokr.layer import factorization
from tests.peftcore.methods import perturb


class ConvNet(nn.Module):
    """A tiny CNN: a 3×3 Conv2d, a 1×1 Conv2d, a Conv1d over the flattened map, a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 12, 3, padding=1)
        self.point = nn.Conv2d(12, 8, 1)
        self.seq = nn.Conv1d(8, 6, 3)
        self.head = nn.Linear(6 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.point(torch.relu(self.conv(x))))
        h = self.seq(h.flatten(2))
        return self.head(h.flatten(1))


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet().eval()


X = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3))
TARGETS = ["conv", "point", "seq", "head"]
CONV_CASES = {
    "loha": ("LoHaConfig", {"r": 3, "alpha": 5}),
    "loha_effective": ("LoHaConfig", {"r": 3, "alpha": 5, "use_effective_conv2d": True}),
    "lokr": ("LoKrConfig", {"r": 2, "alpha": 3}),
    "lokr_effective_both": ("LoKrConfig", {"r": 1, "use_effective_conv2d": True, "decompose_both": True}),
    "lokr_whole": ("LoKrConfig", {"r": 16}),
    "lokr_factor": ("LoKrConfig", {"r": 2, "decompose_factor": 2, "decompose_both": True}),
}


def build(lib: Any, case: str, **overrides: Any) -> Any:
    name, kwargs = CONV_CASES[case]
    fields = {"target_modules": TARGETS, "init_weights": False, **kwargs, **overrides}
    return lib.get_peft_model(conv_net(), getattr(lib, name)(**fields))


def out(model: Any) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(X)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_adapters_cross_load_and_merge_like_hf(case: str, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # HF PEFT 0.21 fails on an effective-form LoKr Conv1d (a view error in its Kronecker product).
        targets = {"target_modules": ["conv", "point", "head"]} if case == "lokr_effective_both" else {}
        for seed, lib in enumerate((peftcore, peft)):
            torch.manual_seed(seed)
            model = build(lib, case, **targets)
            perturb(model, seed=seed + 1)
            model.save_pretrained(tmp_path / lib.__name__)
            models[lib.__name__] = model
        assert (
            models["peftcore"].get_nb_trainable_parameters() == models["peft"].get_nb_trainable_parameters()
        )
        pc_keys = {k: v.shape for k, v in peftcore.load_peft_weights(str(tmp_path / "peftcore")).items()}
        hf_keys = {k: v.shape for k, v in peftcore.load_peft_weights(str(tmp_path / "peft")).items()}
        assert pc_keys == hf_keys
        assert not torch.allclose(out(models["peftcore"]), out(conv_net()), atol=1e-3)
        in_peft = peft.PeftModel.from_pretrained(conv_net(), tmp_path / "peftcore")
        assert in_peft.peft_config["default"].peft_type == models["peftcore"].peft_config["default"].peft_type
        torch.testing.assert_close(out(in_peft), out(models["peftcore"]), atol=1e-5, rtol=1e-5)
        in_peftcore = peftcore.PeftModel.from_pretrained(conv_net(), tmp_path / "peft")
        torch.testing.assert_close(out(in_peftcore), out(models["peft"]), atol=1e-5, rtol=1e-5)
        merged_pc = in_peftcore.merge_and_unload()
        merged_hf = peft.PeftModel.from_pretrained(conv_net(), tmp_path / "peft").merge_and_unload()
    for key, value in merged_hf.state_dict().items():
        torch.testing.assert_close(merged_pc.state_dict()[key], value, atol=1e-5, rtol=1e-5, msg=key)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_identity_at_init_merge_unmerge(case: str) -> None:
    model = build(peftcore, case, init_weights=True)
    torch.testing.assert_close(out(model), out(conv_net()))
    perturb(model, seed=4)
    adapted = out(model)
    model.merge_adapter()
    torch.testing.assert_close(out(model), adapted, atol=1e-5, rtol=1e-5)
    model.merge_adapter()  # idempotent
    model.unmerge_adapter()
    torch.testing.assert_close(out(model), adapted, atol=1e-5, rtol=1e-5)
    with model.disable_adapter():
        torch.testing.assert_close(out(model), out(conv_net()), atol=1e-6, rtol=0)


def test_lokr_lycoris_init_zeroes_the_right_factor() -> None:
    model = build(peftcore, "lokr", init_weights="lycoris")
    torch.testing.assert_close(out(model), out(conv_net()))
    layer = model.base_model.model.head
    assert torch.count_nonzero(layer.lokr_w2_b["default"]) == 0
    assert torch.count_nonzero(layer.lokr_w1["default"]) > 0


@pytest.mark.parametrize(
    ("dimension", "factor", "expected"),
    [
        (256, -1, (16, 16)),
        (128, -1, (8, 16)),
        (127, -1, (1, 127)),
        (128, 4, (4, 32)),
        (12, 5, (3, 4)),
        (84, -1, (7, 12)),
    ],
)
def test_factorization(dimension: int, factor: int, expected: tuple[int, int]) -> None:
    assert factorization(dimension, factor) == expected
    m, n = factorization(dimension, factor)
    assert m * n == dimension and m <= n


def test_rank_dropout_drops_whole_output_rows_during_training_only() -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(16, 32))
    model = peftcore.get_peft_model(
        copy.deepcopy(base), peftcore.LoHaConfig(target_modules=["0"], init_weights=False, rank_dropout=0.5)
    )
    x = torch.randn(4, 16)
    layer = model.base_model.model[0]
    with torch.no_grad():
        delta = x @ layer.delta_weight("default").t()
        plain = base(x)
        model.eval()
        torch.testing.assert_close(model(x), plain + delta)
        model.train()
        torch.manual_seed(1)
        trained = model(x)
    # Each output feature is either the base alone (its ΔW row dropped) or base + ΔW / fraction kept.
    dropped = torch.isclose(trained, plain, atol=1e-6).all(0)
    kept = ~dropped
    assert 0 < int(dropped.sum()) < 32
    scale = 32 / int(kept.sum())
    torch.testing.assert_close(trained[:, kept], (plain + delta * scale)[:, kept], atol=1e-5, rtol=1e-5)


def test_module_dropout_skips_the_whole_adapter_sometimes_in_training() -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 8))
    config = peftcore.LoKrConfig(target_modules=["0"], init_weights=False, module_dropout=0.5)
    model = peftcore.get_peft_model(copy.deepcopy(base), config)
    x = torch.randn(2, 8)
    with torch.no_grad():
        model.eval()
        adapted = model(x)
        model.train()
        seen = {"base": 0, "adapted": 0}
        for _ in range(40):
            y = model(x)
            if torch.allclose(y, base(x)):
                seen["base"] += 1
            else:
                torch.testing.assert_close(y, adapted)
                seen["adapted"] += 1
    assert seen["base"] > 0 and seen["adapted"] > 0


# -- refusals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("config_name", ["LoHaConfig", "LoKrConfig"])
def test_unsupported_layer_is_refused_before_any_change(config_name: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Embedding(10, 4))
    before = [(n, type(m)) for n, m in model.named_modules()]
    config = getattr(peftcore, config_name)(target_modules=["0", "1"])
    with pytest.raises(TypeError, match=r"'1' of type .*Embedding.* not supported.*adjust target_modules"):
        peftcore.get_peft_model(model, config)
    assert [(n, type(m)) for n, m in model.named_modules()] == before
    assert all(p.requires_grad for p in model.parameters())


def test_bad_fields_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"r=0 must be a positive integer"):
        peftcore.LoHaConfig(r=0)
    with pytest.raises(ValueError, match=r"rank_dropout=1.5 must be a probability"):
        peftcore.LoKrConfig(rank_dropout=1.5)
    with pytest.raises(ValueError, match=r"decompose_factor=0 must be a positive integer or -1"):
        peftcore.LoKrConfig(decompose_factor=0)
    with pytest.raises(ValueError, match=r"init_weights='lycoris' must be True"):
        peftcore.LoHaConfig(init_weights="lycoris")
    with pytest.raises(TypeError, match=r"decompose_both.*a field of LoKrConfig"):
        peftcore.LoHaConfig(decompose_both=True)
