"""The HF PEFT API surface peftcore gained: low-level injection, base-model state dicts, adapter dtypes,
several active adapters, mixed-adapter batches, enabling/disabling, attribute access, FSDP and
uninitialised models, loading with a given config, and the errors/warnings users rely on."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from peftcore import (
    LoraConfig,
    PeftModel,
    get_base_model_state_dict,
    get_peft_model,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_base_model_state_dict,
    set_peft_model_state_dict,
)
from peftcore.modules_to_save import ModulesToSaveWrapper
from peftcore.task_models import PeftModelForCausalLM
from peftcore.tuners.lora import LoraLayer


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(10, 20)
        self.lin1 = nn.Linear(20, 20)
        self.head = nn.Linear(20, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.lin1(torch.relu(self.lin0(x)))))


def mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP().eval()


X = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))


def two_adapters(**kw: object) -> PeftModel:
    pm = get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], init_lora_weights=False, **kw), "a")  # type: ignore[arg-type]
    pm.add_adapter("b", LoraConfig(target_modules=["lin0", "lin1"], init_lora_weights=False, **kw))  # type: ignore[arg-type]
    return pm.eval()


# -- low-level API --------------------------------------------------------------------------------
def test_inject_adapter_in_model_adapts_in_place_and_state_dict_round_trips() -> None:
    model = mlp()
    returned = inject_adapter_in_model(LoraConfig(target_modules=["lin0"], modules_to_save=["head"]), model)
    assert (
        returned is model
        and isinstance(model.lin0, LoraLayer)
        and isinstance(model.head, ModulesToSaveWrapper)
    )
    sd = get_peft_model_state_dict(model)
    assert set(sd) == {"lin0.lora_A.weight", "lin0.lora_B.weight", "head.weight", "head.bias"}
    other = inject_adapter_in_model(LoraConfig(target_modules=["lin0"], modules_to_save=["head"]), mlp())
    with torch.no_grad():
        sd = {k: v + 1.0 for k, v in sd.items()}
    result = set_peft_model_state_dict(other, sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(other.lin0.lora_B["default"].weight, sd["lin0.lora_B.weight"])


def test_inject_adapter_in_model_low_cpu_mem_usage_puts_adapters_on_meta() -> None:
    model = inject_adapter_in_model(LoraConfig(target_modules=["lin0"]), mlp(), low_cpu_mem_usage=True)
    devices = {n: p.device.type for n, p in model.named_parameters()}
    assert devices["lin0.lora_A.default.weight"] == "meta" and devices["lin0.base_layer.weight"] == "cpu"


def test_base_model_state_dict_hides_adapters_and_round_trips() -> None:
    reference = mlp()
    pm = two_adapters(modules_to_save=None)
    pm.add_adapter("c", LoraConfig(target_modules=["lin1"], modules_to_save=["head"]))
    state = get_base_model_state_dict(pm)
    assert state.keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(state[key], value)
    with torch.no_grad():
        changed = {k: v + 1.0 for k, v in state.items()}
    result = set_base_model_state_dict(pm, changed)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(pm.get_base_model().lin0.base_layer.weight, changed["lin0.weight"])
    assert torch.equal(pm.get_base_model().head.original_module.bias, changed["head.bias"])
    with pytest.raises(RuntimeError, match="unexpected keys"):
        set_base_model_state_dict(pm, {**changed, "nope.weight": torch.zeros(1)})


# -- dtypes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("autocast", [True, False])
def test_add_adapter_and_loading_honour_autocast_adapter_dtype(autocast: bool, tmp_path: Path) -> None:
    expected = torch.float32 if autocast else torch.bfloat16
    base = mlp().to(torch.bfloat16)
    pm = get_peft_model(base, LoraConfig(target_modules=["lin0"]), autocast_adapter_dtype=autocast)
    pm.add_adapter("other", LoraConfig(target_modules=["lin0"]), autocast_adapter_dtype=autocast)
    assert {p.dtype for n, p in pm.named_parameters() if "lora_" in n} == {expected}
    pm.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(mlp().to(torch.bfloat16), tmp_path, autocast_adapter_dtype=autocast)
    loaded.load_adapter(tmp_path / "other", "other", autocast_adapter_dtype=autocast)
    assert {p.dtype for n, p in loaded.named_parameters() if "lora_" in n} == {expected}


# -- activating and training ----------------------------------------------------------------------
def test_set_adapter_inference_mode_freezes_the_active_adapter() -> None:
    pm = two_adapters()
    pm.set_adapter("b")
    assert {n for n, p in pm.named_parameters() if p.requires_grad} == {
        f"base_model.model.{m}.lora_{ab}.b.weight" for m in ("lin0", "lin1") for ab in "AB"
    }
    pm.set_adapter("b", inference_mode=True)
    assert not any(p.requires_grad for p in pm.parameters())
    assert pm.active_adapter == "b"


def test_several_active_adapters_add_up_and_merge_together() -> None:
    pm = two_adapters()
    pm.set_adapter("a")
    out_a = pm(X)
    pm.set_adapter("b")
    out_b = pm(X)
    pm.base_model.set_adapter(["a", "b"])
    assert pm.active_adapters == ["a", "b"] and pm.base_model.active_adapter == ["a", "b"]
    both = pm(X)
    assert not torch.allclose(both, out_a) and not torch.allclose(both, out_b)
    layer = pm.get_base_model().lin0
    expected_lin0 = layer.base_layer(X) + sum(
        layer.scaling[n] * (X @ layer.lora_A[n].weight.T @ layer.lora_B[n].weight.T) for n in ("a", "b")
    )
    torch.testing.assert_close(layer(X), expected_lin0, atol=1e-5, rtol=1e-5)
    pm.merge_adapter()
    torch.testing.assert_close(pm(X), both, atol=1e-5, rtol=1e-5)


def test_disable_and_enable_adapter_layers() -> None:
    base_out = mlp()(X)
    pm = two_adapters()
    adapted = pm(X)
    pm.disable_adapter_layers()
    torch.testing.assert_close(pm(X), base_out, atol=0, rtol=0)
    assert not any(p.requires_grad for p in pm.parameters())
    with pm.disable_adapter():
        pass
    torch.testing.assert_close(pm(X), base_out, atol=0, rtol=0)  # stays disabled after the context
    pm.enable_adapter_layers()
    torch.testing.assert_close(pm(X), adapted, atol=0, rtol=0)
    pm.get_base_model().lin0.enable_adapters(False)  # one layer off, the other on
    with (
        pytest.warns(UserWarning, match="some adapter layers that are enabled and others that are disabled"),
        pm.disable_adapter(),
    ):
        pass
    torch.testing.assert_close(pm(X), adapted, atol=0, rtol=0)


# -- mixed-adapter batches ------------------------------------------------------------------------
def test_mixed_batch_gives_each_row_its_adapter() -> None:
    pm = two_adapters()
    with pm.disable_adapter():
        base = pm(X)
    pm.set_adapter("a")
    out_a = pm(X)
    pm.set_adapter("b")
    out_b = pm(X)
    names = ["__base__", "a", "b"] * 2
    mixed = pm(X, adapter_names=names)
    torch.testing.assert_close(mixed[0::3], base[0::3], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mixed[1::3], out_a[1::3], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mixed[2::3], out_b[2::3], atol=1e-6, rtol=1e-6)


def test_mixed_batch_errors() -> None:
    pm = two_adapters()
    with pytest.raises(ValueError, match="Length of `adapter_names` should be the same"):
        pm(X, adapter_names=["a"] * 2)
    with pytest.raises(ValueError, match=r"non-existing adapter.*nope"):
        pm(X, adapter_names=["nope"] * 6)
    pm.merge_adapter(["a"])
    with pytest.raises(ValueError, match="merged adapters"):
        pm(X, adapter_names=["a"] * 6)
    pm.unmerge_adapter()
    pm.train()
    with pytest.raises(ValueError, match="training mode"):
        pm(X, adapter_names=["a"] * 6)
    dora = get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], use_dora=True)).eval()
    with pytest.raises(ValueError, match="DoRA"):
        dora(X, adapter_names=["default"] * 6)


# -- attribute access and construction ------------------------------------------------------------
def test_attributes_reach_the_base_model_through_the_tuner() -> None:
    pm = two_adapters()
    assert pm.lin1 is pm.get_base_model().lin1
    assert pm.base_model.lin1 is pm.get_base_model().lin1
    assert pm.model is pm.get_base_model()  # the tuner's own attribute
    assert pm.prefix == "lora_"
    with pytest.raises(AttributeError, match="nope"):
        pm.nope  # noqa: B018


def test_hasattr_on_a_peft_model_before_init_does_not_recurse() -> None:
    """DeepSpeed's zero.Init wraps __init__ and calls hasattr on the half-built module."""

    def probe(init):  # type: ignore[no-untyped-def]
        @functools.wraps(init)
        def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            assert not hasattr(self, "anything")
            init(self, *args, **kwargs)

        return wrapper

    for cls in (PeftModel, PeftModelForCausalLM):
        original = cls.__init__
        cls.__init__ = probe(original)  # type: ignore[method-assign]
        try:
            cls(mlp(), LoraConfig(target_modules=["lin0"]))
        finally:
            cls.__init__ = original  # type: ignore[method-assign]


def test_fsdp_wrapped_state_dict_has_plain_keys() -> None:
    dist = pytest.importorskip("torch.distributed")
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    pm = get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], init_lora_weights=False)).eval()
    expected = get_peft_model_state_dict(pm)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        wrapped = FSDP(pm, use_orig_params=True, device_id=torch.device("cpu"))
        state = get_peft_model_state_dict(wrapped)
        out = wrapped(X)
    finally:
        dist.destroy_process_group()
    assert state.keys() == expected.keys()
    fresh = get_peft_model(mlp(), LoraConfig(target_modules=["lin0"])).eval()
    set_peft_model_state_dict(fresh, state)
    torch.testing.assert_close(fresh(X), out, atol=1e-6, rtol=1e-6)


class AttentionModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(10, 2)
        self.lin = nn.Linear(10, 10)
        self.head = nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.mha(x, x, x)
        return self.head(self.lin(h))


@pytest.mark.parametrize(
    "config_kwargs",
    [{"target_modules": ["mha"]}, {"target_parameters": ["lin.weight"]}],
    ids=["multihead-attention", "target-parameters"],
)
def test_fsdp_wrapped_forward_applies_weight_substituting_adapters(config_kwargs: dict) -> None:
    # FSDP(use_orig_params=True) serves parameters as plain tensors on the module during the forward;
    # layers that hand adapted weights to the base module's code must still reach it.
    dist = pytest.importorskip("torch.distributed")
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    torch.manual_seed(0)
    pm = get_peft_model(AttentionModel(), LoraConfig(init_lora_weights=False, **config_kwargs)).eval()
    x = torch.randn(9, 10)
    with torch.no_grad():
        expected = pm(x)
        with pm.disable_adapter():
            base = pm(x)
    assert not torch.allclose(expected, base)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with torch.no_grad():
            out = FSDP(pm, use_orig_params=True, device_id=torch.device("cpu"))(x)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


def test_from_pretrained_uses_the_given_config_object(tmp_path: Path) -> None:
    config = LoraConfig(target_modules=["lin0"], init_lora_weights=False)
    get_peft_model(mlp(), config).save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(mlp(), tmp_path, config=config)
    assert loaded.peft_config["default"] is config and config.inference_mode is True


def test_custom_model_card_has_no_base_model_and_a_method_tag(tmp_path: Path) -> None:
    # The card's base_model comes from the base model's own config (as HF PEFT): a custom model has none,
    # whatever the adapter config names; the adapter config keeps the name it was given.
    pm = get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], base_model_name_or_path="org/mine"))
    pm.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: peft" in front and "- lora" in front and "base_model:" not in front
    assert len(card) > 1000, "a filled-in template, not a stub"
    assert json.loads((tmp_path / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/mine"


def test_base_model_name_is_kept_as_given_and_filled_from_the_model_on_save(tmp_path: Path) -> None:
    model = mlp()
    model.name_or_path = "/local/copy/of/model"  # type: ignore[assignment]
    pm = get_peft_model(model, LoraConfig(target_modules=["lin0"]))
    assert pm.peft_config["default"].base_model_name_or_path is None  # filled at save time only
    pm.save_pretrained(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "/local/copy/of/model"
    model = mlp()
    model.name_or_path = "/local/copy/of/model"  # type: ignore[assignment]
    pm = get_peft_model(model, LoraConfig(target_modules=["lin0"], base_model_name_or_path="org/model"))
    pm.save_pretrained(tmp_path / "b")
    saved = json.loads((tmp_path / "b" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "org/model"


# -- errors and warnings users match on -----------------------------------------------------------
def test_only_one_adapter_may_train_biases() -> None:
    pm = get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], bias="all"))
    with pytest.raises(ValueError, match="supports only 1 adapter with bias"):
        pm.add_adapter("other", LoraConfig(target_modules=["lin0"], bias="lora_only"))
    assert list(pm.peft_config) == ["default"]
    assert not any(".other" in n for n, _ in pm.named_parameters())


def test_overlapping_modules_to_save_cannot_be_active_together() -> None:
    pm = get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], modules_to_save=["head"]), "a")
    pm.add_adapter("b", LoraConfig(target_modules=["lin0"], modules_to_save=["head"]))
    with pytest.raises(ValueError, match="Only one adapter can be set at a time for ModulesToSaveWrapper"):
        pm.base_model.set_adapter(["a", "b"])
    assert pm.active_adapters == ["a"]


def test_merging_twice_warns_and_changes_nothing() -> None:
    pm = get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], init_lora_weights=False))
    pm.merge_adapter()
    weight = pm.get_base_model().lin0.base_layer.weight.detach().clone()
    with pytest.warns(UserWarning, match="All adapters are already merged, nothing to do"):
        pm.merge_adapter()
    assert torch.equal(pm.get_base_model().lin0.base_layer.weight, weight)


def test_deleting_a_merged_adapter_is_refused() -> None:
    pm = two_adapters()
    pm.merge_adapter(["a"])
    with pytest.raises(ValueError, match=r"Cannot delete adapter\(s\) \['a'\] while they are merged"):
        pm.delete_adapter("a")
    pm.delete_adapter("b")
    assert pm.get_base_model().lin0.merged_adapters == ["a"], "deleting another adapter keeps the merge"


def test_loading_a_file_with_other_shapes_is_a_size_mismatch(tmp_path: Path) -> None:
    get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], r=4)).save_pretrained(tmp_path)
    model = nn.Sequential()
    model.add_module("lin0", nn.Linear(12, 20))
    with pytest.raises(RuntimeError, match=r"size mismatch.*\(4, 10\).*\(4, 12\)"):
        PeftModel.from_pretrained(model, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PeftModel.from_pretrained(model, tmp_path, ignore_mismatched_sizes=True)
    assert any("ignore_mismatched_sizes" in str(w.message) for w in caught)
