"""LoRA options beyond the basics: lora_bias, target_parameters, trainable_token_indices, exclude_modules edge
cases and ensure_weight_tying — behaviour, and files that move both ways with HF peft."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peftcore import LoraConfig, PeftModel, PeftWarning, get_peft_model
from peftcore.modules_to_save import ModulesToSaveWrapper
from peftcore.trainable_tokens import TrainableTokensWrapper
from peftcore.tuners.lora import LoraLayer, ParamWrapper


class Net(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.lin0 = nn.Linear(8, 16, bias=bias)
        self.lin1 = nn.Linear(16, 4, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin1(torch.relu(self.lin0(self.emb(x)))).mean(1)


class Experts(nn.Module):
    """MoE-style experts: stacked weights used without a Linear module."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_up = nn.Parameter(torch.randn(3, 8, 12) * 0.1)  # (experts, in, out)
        self.down = nn.Parameter(torch.randn(3, 12, 8) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.einsum("bi,eio->beo", x, self.gate_up).relu()
        return torch.einsum("beo,eoi->bi", hidden, self.down)


class MoE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.experts = Experts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(self.proj(x))


def net(seed: int = 0, **kw: Any) -> Net:
    torch.manual_seed(seed)
    return Net(**kw).eval()


def moe(seed: int = 0) -> MoE:
    torch.manual_seed(seed)
    return MoE().eval()


TOKENS = torch.randint(0, 30, (4, 5), generator=torch.Generator().manual_seed(2))
X = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))


def perturb(model: nn.Module, scale: float = 0.2) -> None:
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def disk_keys(directory: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in load_file(str(directory / "adapter_model.safetensors")).items()}


# -- lora_bias ------------------------------------------------------------------------------------
def test_lora_bias_trains_merges_into_the_base_bias_and_matches_hf(tmp_path: Path) -> None:
    config = LoraConfig(target_modules=["lin0", "lin1"], lora_bias=True, lora_alpha=16)
    pm = get_peft_model(net(), config).eval()
    assert pm.get_base_model().lin0.lora_B["default"].bias is not None
    assert torch.count_nonzero(pm.get_base_model().lin0.lora_B["default"].bias) == 0, (
        "B's bias starts at zero"
    )
    perturb(pm)
    adapted = pm(TOKENS)
    pm.save_pretrained(tmp_path / "pc")
    assert "base_model.model.lin0.lora_B.bias" in disk_keys(tmp_path / "pc")
    merged = pm.merge_and_unload()
    torch.testing.assert_close(merged(TOKENS), adapted, atol=1e-5, rtol=1e-5)
    peft = pytest.importorskip("peft")
    hf = peft.PeftModel.from_pretrained(net(), str(tmp_path / "pc")).eval()
    torch.testing.assert_close(hf(TOKENS), adapted, atol=1e-5, rtol=1e-5)


def test_lora_bias_without_a_base_bias_warns_and_cannot_merge() -> None:
    with pytest.warns(PeftWarning, match="`lora_bias=True` was passed but the targeted layer of type Linear"):
        pm = get_peft_model(net(bias=False), LoraConfig(target_modules=["lin0"], lora_bias=True))
    with pytest.raises(RuntimeError, match="Impossible to merge LoRA with `lora_bias=True`"):
        pm.merge_adapter()
    with pytest.raises(ValueError, match="lora_bias=True is not supported for Embedding"):
        get_peft_model(net(), LoraConfig(target_modules=["emb"], lora_bias=True))
    with pytest.raises(ValueError, match="lora_bias=True is not supported for DoRA"):
        LoraConfig(target_modules=["lin0"], lora_bias=True, use_dora=True)


# -- target_parameters ----------------------------------------------------------------------------
def test_target_parameters_adapt_stacked_expert_weights_like_hf(tmp_path: Path) -> None:
    config = LoraConfig(target_modules=[], target_parameters=["experts.gate_up", "experts.down"], r=2)
    pm = get_peft_model(moe(), config).eval()
    assert isinstance(pm.get_base_model().experts, ParamWrapper)
    torch.testing.assert_close(pm(X), moe()(X), atol=1e-6, rtol=1e-6)  # identity at init
    perturb(pm)
    adapted = pm(X)
    assert not torch.allclose(adapted, moe()(X), atol=1e-4)
    pm.save_pretrained(tmp_path / "pc")
    loaded = PeftModel.from_pretrained(moe(), tmp_path / "pc")
    torch.testing.assert_close(loaded(X), adapted, atol=1e-6, rtol=1e-6)
    pm.merge_adapter()
    torch.testing.assert_close(pm(X), adapted, atol=1e-5, rtol=1e-5)
    peft = pytest.importorskip("peft")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.PeftModel.from_pretrained(moe(), str(tmp_path / "pc")).eval()
        torch.testing.assert_close(hf(X), adapted, atol=1e-5, rtol=1e-5)
        hf_model = peft.get_peft_model(moe(), peft.LoraConfig(**{**config.to_dict(), "peft_type": "LORA"}))
        hf_model.save_pretrained(str(tmp_path / "hf"))
    assert disk_keys(tmp_path / "hf") == disk_keys(tmp_path / "pc")


def test_target_parameters_errors() -> None:
    with pytest.raises(TypeError, match="`target_parameters` must be a list of strings or None"):
        LoraConfig(target_parameters="experts.gate_up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Trying to wrap an `nn\.Parameter` of layer 'proj'"):
        get_peft_model(moe(), LoraConfig(target_modules=["proj"], target_parameters=["proj.weight"]))
    pm = get_peft_model(moe(), LoraConfig(target_modules=[], target_parameters=["experts.gate_up"]))
    with pytest.raises(ValueError, match="all adapters must target the same set of parameters"):
        pm.add_adapter("other", LoraConfig(target_modules=[], target_parameters=["experts.down"]))
    with pytest.warns(
        RuntimeWarning, match=r"target_parameters=\['nope'\] were set but no parameter was matched"
    ):
        get_peft_model(moe(), LoraConfig(target_modules=["proj"], target_parameters=["nope"]))
    with pytest.raises(ValueError, match=r"lora\.ParamWrapper does not support mixed adapter batches"):
        pm.eval()(X, adapter_names=["default"] * len(X))


# -- trainable_token_indices ----------------------------------------------------------------------
def test_trainable_tokens_train_only_their_rows_and_match_hf_keys(tmp_path: Path) -> None:
    config = LoraConfig(target_modules=["lin0"], trainable_token_indices={"emb": [1, 5]})
    pm = get_peft_model(net(), config)
    assert isinstance(pm.get_base_model().emb, TrainableTokensWrapper)
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert "base_model.model.emb.token_adapter.trainable_tokens_delta.default" in trainable
    torch.testing.assert_close(pm(TOKENS), net()(TOKENS), atol=1e-6, rtol=1e-6)  # no-op at start
    optimizer = torch.optim.SGD(pm.parameters(), lr=0.5)
    pm.train()
    pm(TOKENS).sum().backward()
    optimizer.step()
    pm.eval()
    table = pm.get_base_model().emb.weight  # the table with the trained rows in place
    original = net().emb.weight
    changed = {int(i) for i in torch.nonzero((table - original).abs().sum(1) > 0)}
    assert changed <= {1, 5}
    pm.save_pretrained(tmp_path / "pc")
    keys = disk_keys(tmp_path / "pc")
    assert keys["base_model.model.emb.token_adapter.trainable_tokens_delta"] == (2, 8)
    loaded = PeftModel.from_pretrained(net(), tmp_path / "pc")
    torch.testing.assert_close(loaded(TOKENS), pm(TOKENS), atol=1e-6, rtol=1e-6)
    merged = pm.merge_and_unload()
    assert isinstance(merged.emb, nn.Embedding) and torch.equal(merged.emb.weight, table.detach())
    peft = pytest.importorskip("peft")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.get_peft_model(
            net(), peft.LoraConfig(target_modules=["lin0"], trainable_token_indices={"emb": [1, 5]})
        )
        hf.save_pretrained(str(tmp_path / "hf"))
    assert disk_keys(tmp_path / "hf") == keys


def test_trainable_tokens_overlapping_adapters_cannot_be_active_together() -> None:
    pm = get_peft_model(net(), LoraConfig(target_modules=["lin0"], trainable_token_indices={"emb": [1]}), "a")
    pm.add_adapter("b", LoraConfig(target_modules=["lin0"], trainable_token_indices={"emb": [1]}))
    # model-wide, one adapter per wrapper (as HF PEFT)
    with pytest.raises(ValueError, match="Only one adapter can be set at a time for TrainableTokensWrapper"):
        pm.base_model.set_adapter(["a", "b"])
    # on the wrapper itself, only adapters training different rows combine
    with pytest.raises(ValueError, match="Token indices of adapter b are already defined"):
        pm.get_base_model().emb.set_adapter(["a", "b"])


def test_trainable_tokens_adapters_on_disjoint_rows_combine_on_the_wrapper() -> None:
    pm = get_peft_model(net(), LoraConfig(target_modules=["lin0"], trainable_token_indices={"emb": [1]}), "a")
    pm.add_adapter("b", LoraConfig(target_modules=["lin0"], trainable_token_indices={"emb": [2, 3]}))
    emb = pm.get_base_model().emb
    deltas = emb.token_adapter.trainable_tokens_delta
    with torch.no_grad():
        deltas["a"].fill_(1.0)
        deltas["b"].fill_(2.0)
    emb.set_adapter(["a", "b"])
    rows = emb(torch.tensor([1, 2, 3, 4]))
    assert (rows[0] == 1.0).all() and (rows[1:3] == 2.0).all()
    torch.testing.assert_close(rows[3], emb.original_module.weight[4])


def test_modules_to_save_copies_cannot_be_active_together_on_the_wrapper() -> None:
    pm = get_peft_model(net(), LoraConfig(target_modules=["lin0"], modules_to_save=["lin1"]), "a")
    pm.add_adapter("b", LoraConfig(target_modules=["lin0"], modules_to_save=["lin1"]))
    with pytest.raises(ValueError, match=r"Attempted to set multiple \(\['a', 'b'\]\) adapters"):
        pm.get_base_model().lin1.set_adapter(["a", "b"])


# -- exclude_modules ------------------------------------------------------------------------------
def test_exclude_modules_edge_cases() -> None:
    pm = get_peft_model(net(), LoraConfig(target_modules=["lin0", "lin1"], exclude_modules=["lin1"]))
    assert isinstance(pm.get_base_model().lin0, LoraLayer) and not isinstance(
        pm.get_base_model().lin1, LoraLayer
    )
    with pytest.raises(ValueError, match="All modules were excluded"):
        get_peft_model(net(), LoraConfig(target_modules=r"lin\d", exclude_modules=r".*"))
    with pytest.raises(ValueError, match="No modules were targeted for adaptation"):
        get_peft_model(net(), LoraConfig(target_modules=["lin1"], exclude_modules=["lin1"]))
    with pytest.warns(UserWarning, match=r"exclude_modules=\{'nope'\} but no modules were excluded"):
        get_peft_model(net(), LoraConfig(target_modules=["lin0"], exclude_modules=["nope"]))


# -- ensure_weight_tying --------------------------------------------------------------------------
class TiedConfig:
    def __init__(self, tie: bool) -> None:
        self.tie_word_embeddings = tie

    def to_dict(self) -> dict[str, Any]:
        return {"tie_word_embeddings": self.tie_word_embeddings}


class TiedLM(nn.Module):
    # How transformers models declare tied weights (HF PEFT reads it).
    _tied_weights_keys: ClassVar[list[str]] = ["lm_head.weight"]

    def __init__(self, tie: bool = True) -> None:
        super().__init__()
        self.config = TiedConfig(tie)
        self.embed_tokens = nn.Embedding(30, 8)
        self.linear = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 30, bias=False)
        self.lm_head.weight = self.embed_tokens.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.relu(self.linear(self.embed_tokens(x))))


def tied_lm() -> TiedLM:
    torch.manual_seed(0)
    return TiedLM().eval()


def test_weight_tying_targets_ties_the_adapters_and_merges_once() -> None:
    pm = get_peft_model(tied_lm(), LoraConfig(target_modules=["linear", "lm_head"], ensure_weight_tying=True))
    model = pm.get_base_model()
    assert isinstance(model.embed_tokens, LoraLayer) and isinstance(model.lm_head, LoraLayer)
    emb, head = model.embed_tokens, model.lm_head
    assert head.lora_A["default"].weight.data_ptr() == emb.lora_embedding_B["default"].data_ptr()
    assert head.lora_B["default"].weight.data_ptr() == emb.lora_embedding_A["default"].data_ptr()
    perturb(pm)
    adapted = pm(TOKENS)
    torch.testing.assert_close(head.get_delta_weight("default"), emb.get_delta_weight("default"))
    pm.merge_adapter()
    torch.testing.assert_close(pm(TOKENS), adapted, atol=1e-5, rtol=1e-5)
    pm.unmerge_adapter()
    torch.testing.assert_close(emb.base_layer.weight, tied_lm().embed_tokens.weight, atol=1e-6, rtol=1e-6)


def test_weight_tying_modules_to_save_share_the_copies_and_warnings() -> None:
    pm = get_peft_model(
        tied_lm(),
        LoraConfig(target_modules=["linear"], modules_to_save=["lm_head"], ensure_weight_tying=True),
    )
    model = pm.get_base_model()
    assert isinstance(model.embed_tokens, ModulesToSaveWrapper) and isinstance(
        model.lm_head, ModulesToSaveWrapper
    )
    assert (
        model.lm_head.modules_to_save["default"].weight
        is model.embed_tokens.modules_to_save["default"].weight
    )
    with pytest.warns(UserWarning, match="`ensure_weight_tying` is not set to True"):
        get_peft_model(tied_lm(), LoraConfig(target_modules=["linear", "lm_head"]))
    with pytest.warns(UserWarning, match="no tied modules are added"):
        get_peft_model(tied_lm(), LoraConfig(target_modules=["linear"], ensure_weight_tying=True))
    untied = TiedLM(tie=False)
    with pytest.warns(UserWarning, match="no tied modules were found in the model"):
        get_peft_model(untied, LoraConfig(target_modules=["lm_head"], ensure_weight_tying=True))


def test_weight_tying_is_planned_on_the_targets_as_given_not_the_all_linear_expansion() -> None:
    # As HF PEFT: "all-linear" names no embedding, so nothing is tied (the expansion then adapts the
    # head, a Linear, on its own) and the user is told.
    with pytest.warns(UserWarning, match="no tied modules are added"):
        pm = get_peft_model(tied_lm(), LoraConfig(target_modules="all-linear", ensure_weight_tying=True))
    model = pm.get_base_model()
    assert isinstance(model.linear, LoraLayer) and isinstance(model.lm_head, LoraLayer)
    assert type(model.embed_tokens) is nn.Embedding


def test_trainable_tokens_naming_an_adapter_instead_of_a_module_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="matches only the adapter's own name 'emb_adapter'"):
        get_peft_model(
            net(),
            LoraConfig(target_modules=["lin0"], trainable_token_indices={"emb_adapter": [1]}),
            adapter_name="emb_adapter",
        )
    pm = get_peft_model(net(), LoraConfig(target_modules=["lin0"]), adapter_name="first")
    with pytest.raises(ValueError, match=r"TrainableTokensWrapper'> that is a child of <class .*Linear'>"):
        pm.add_adapter("second", LoraConfig(target_modules=["lin1"], trainable_token_indices={"first": [1]}))
    assert "second" not in pm.peft_config
