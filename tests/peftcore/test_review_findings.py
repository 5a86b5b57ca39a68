"""The correctness list of a review (issue 11), one test per finding. Each failed on the code before the
fix, except the two marked as guards: nested disable_adapter blocks and the disabled merged Embedding /
Conv2d were already right when the fixes were made (the adapter-layer framework had changed them)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import peftcore
from peftcore.tuners.lora import linear as lora_linear
from tests import tiny


def _ids() -> torch.Tensor:
    return torch.randint(0, tiny.VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))


def _llama(**config: Any) -> Any:
    torch.manual_seed(0)
    model = tiny.build("llama")
    torch.manual_seed(1)
    cfg = peftcore.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **config)
    return peftcore.get_peft_model(model, cfg)


def _q_proj(model: Any) -> Any:
    return model.base_model.model.model.layers[0].self_attn.q_proj


# -- disable_adapter ---------------------------------------------------------------------------------
def test_disable_adapter_merges_again_what_it_unmerged() -> None:
    model = _llama()
    ids = _ids()
    with torch.no_grad():
        model.merge_adapter()
        merged = model(ids).logits
        with model.disable_adapter():
            model(ids)  # a disabled merged layer unmerges at its forward
        assert _q_proj(model).merged, "the block left the model unmerged"
        torch.testing.assert_close(model(ids).logits, merged, rtol=0, atol=1e-6)


def test_disable_adapter_is_reentrant() -> None:  # guard
    model = _llama()
    ids = _ids()
    with torch.no_grad():
        adapted = model(ids).logits
        with model.disable_adapter():
            base = model(ids).logits
            with model.disable_adapter():
                pass
            torch.testing.assert_close(model(ids).logits, base)  # still disabled inside the outer block
        torch.testing.assert_close(model(ids).logits, adapted)
    assert not torch.allclose(adapted, base)


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_disable_adapter_with_trained_biases_gives_the_base_output(bias: str) -> None:
    torch.manual_seed(0)
    plain = tiny.build("opt")
    ids = _ids()
    with torch.no_grad():
        base = plain(ids).logits
    model = peftcore.get_peft_model(
        plain, peftcore.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], bias=bias)
    )
    trained = [p for n, p in model.named_parameters() if n.endswith(".bias") and p.requires_grad]
    assert trained
    with torch.no_grad():
        for param in trained:  # what training the biases does
            param.add_(0.25)
        adapted = model(ids).logits
        with model.disable_adapter():  # a reference pass (DPO and the like) must be the base model
            torch.testing.assert_close(model(ids).logits, base, rtol=0, atol=1e-6)
        torch.testing.assert_close(model(ids).logits, adapted, rtol=0, atol=0)  # the trained biases are back
    assert all(p.requires_grad for p in trained)


# -- DoRA merge state and deletion order -------------------------------------------------------------
def test_dora_merge_state_moves_with_the_module() -> None:
    model = _llama(use_dora=True)
    layer = _q_proj(model)
    before = layer.get_base_layer().weight.detach().clone()
    model.merge_adapter()
    model.to("meta")  # stands in for a move to another device (CPU -> GPU): the state must follow
    model.unmerge_adapter()  # the kept norms on the old device would fail to combine with meta tensors
    assert layer.get_base_layer().weight.device.type == "meta" and not layer.merged
    model2 = _llama(use_dora=True)
    model2.merge_adapter()
    model2.double()
    model2.unmerge_adapter()
    torch.testing.assert_close(_q_proj(model2).get_base_layer().weight, before.double(), rtol=0, atol=1e-5)


def test_deleting_a_merged_dora_adapter_unmerges_in_reverse_order() -> None:
    def two() -> Any:
        torch.manual_seed(0)
        model = peftcore.get_peft_model(
            tiny.build("llama"),
            peftcore.LoraConfig(r=4, target_modules=["q_proj"], use_dora=True, init_lora_weights=False),
            adapter_name="a",
        )
        torch.manual_seed(1)
        model.add_adapter(
            "b", peftcore.LoraConfig(r=4, target_modules=["q_proj"], use_dora=True, init_lora_weights=False)
        )
        return model

    model, reference = two(), two()
    ids = _ids()
    model.base_model.merge_adapter(["a", "b"])
    for _, layer in model.base_model.tuner_layers():
        layer.delete_adapter("a")  # b was merged on top of a: a cannot come out first
    reference.delete_adapter("a")
    reference.base_model.merge_adapter(["b"])
    assert _q_proj(model).merged_adapters == ["b"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)


# -- what the user unfroze stays unfrozen --------------------------------------------------------------
def test_add_and_set_adapter_keep_base_parameters_the_user_unfroze() -> None:
    model = _llama()
    head = model.base_model.model.lm_head.weight
    head.requires_grad_(True)
    model.add_adapter("other", peftcore.LoraConfig(r=2, target_modules=["v_proj"]))
    assert head.requires_grad
    # The new adapter is not active, so it does not train; the active one still does.
    layer = model.base_model.model.model.layers[0].self_attn.v_proj
    assert not layer.lora_A["other"].weight.requires_grad and layer.lora_A["default"].weight.requires_grad
    model.set_adapter("other")
    model.base_model.enable_adapter_layers()
    assert head.requires_grad and layer.lora_A["other"].weight.requires_grad


# -- arguments that used to be accepted and ignored ------------------------------------------------------
def test_merge_and_unload_shows_a_progress_bar_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    _llama().merge_and_unload(progressbar=True)
    assert "Merging adapters" in capsys.readouterr().err
    _llama().merge_and_unload()
    assert "Merging adapters" not in capsys.readouterr().err


def test_loading_passes_hub_arguments_on_and_refuses_unknown_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    _llama().save_pretrained(tmp_path / "local")
    with pytest.raises(TypeError, match="bogus"):
        peftcore.PeftModel.from_pretrained(tiny.build("llama"), tmp_path / "local", bogus=1)
    with pytest.raises(TypeError, match="bogus"):
        _llama().load_adapter(tmp_path / "local", "second", bogus=1)
    with pytest.raises(TypeError, match="max_shard_size"):
        _llama().save_pretrained(tmp_path / "again", max_shard_size="1GB")
    # A config field given as a keyword overrides the saved one, as in HF PEFT.
    loaded = peftcore.PeftModel.from_pretrained(tiny.build("llama"), tmp_path / "local", lora_dropout=0.25)
    assert loaded.peft_config["default"].lora_dropout == 0.25

    seen: list[dict[str, Any]] = []

    @functools.wraps(huggingface_hub.hf_hub_download)  # the real signature: it says which arguments it takes
    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        seen.append(kwargs)
        return os.fspath(tmp_path / "local" / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    peftcore.PeftModel.from_pretrained(
        tiny.build("llama"), "org/adapter", cache_dir=str(tmp_path / "cache"), local_files_only=True
    )
    assert seen and all(k["cache_dir"] == str(tmp_path / "cache") and k["local_files_only"] for k in seen)


# -- transformers 5.0 has no activation_checkpointing_enable --------------------------------------------
def test_gradient_checkpointing_works_on_transformers_before_the_rename(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import PreTrainedModel

    # transformers 5.0's API: only the gradient_checkpointing_* names (later versions alias them to the
    # activation_checkpointing_* ones, so the 5.0 methods are stood in for here).
    calls: list[tuple[str, Any]] = []
    monkeypatch.delattr(PreTrainedModel, "activation_checkpointing_enable")
    monkeypatch.delattr(PreTrainedModel, "activation_checkpointing_disable")
    monkeypatch.setattr(
        PreTrainedModel,
        "gradient_checkpointing_enable",
        lambda self, gradient_checkpointing_kwargs=None: calls.append(
            ("enable", gradient_checkpointing_kwargs)
        ),
    )
    monkeypatch.setattr(
        PreTrainedModel, "gradient_checkpointing_disable", lambda self: calls.append(("disable", None))
    )
    model = _llama()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.activation_checkpointing_disable()
    assert calls == [("enable", {"use_reentrant": False}), ("disable", None)]


# -- the in-place add fails closed when torch's internals move ------------------------------------------
def test_in_place_lora_add_is_off_when_torch_hook_registries_are_not_where_expected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert lora_linear._inplace_supported()
    with monkeypatch.context() as patched:  # torch itself needs the registry back to run a module
        patched.delattr(nn.modules.module, "_global_forward_hooks")
        assert not lora_linear._inplace_supported()
    monkeypatch.setattr(lora_linear, "_INPLACE_SUPPORTED", False)
    model = _llama()
    layer = _q_proj(model)
    assert not layer._owns_base_output()
    x = torch.randn(3, 32)
    a, b = layer.lora_A["default"], layer.lora_B["default"]
    torch.testing.assert_close(layer(x), layer.get_base_layer()(x) + b(a(x)) * layer.scaling["default"])


@pytest.mark.parametrize("kind", ["embedding", "conv2d"])
def test_a_disabled_merged_embedding_or_conv_answers_with_the_base(kind: str) -> None:  # guard
    torch.manual_seed(0)
    if kind == "embedding":
        base: nn.Module = nn.Sequential(nn.Embedding(20, 8))
        x = torch.randint(0, 20, (2, 5))
    else:
        base = nn.Sequential(nn.Conv2d(3, 8, 3))
        x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = base(x)
    model = peftcore.get_peft_model(
        base, peftcore.LoraConfig(r=2, target_modules=["0"], init_lora_weights=False)
    )
    model.merge_adapter()
    with torch.no_grad(), model.disable_adapter():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)


# -- offloaded base weights (accelerate) ----------------------------------------------------------------
def _offloaded_llama() -> Any:
    from accelerate import cpu_offload

    torch.manual_seed(0)
    model = tiny.build("llama")
    cpu_offload(model, execution_device=torch.device("cpu"))  # weights on meta, brought in per forward
    assert model.model.layers[0].self_attn.q_proj.weight.device.type == "meta"
    return model


def test_adapters_on_an_offloaded_base_live_and_run_on_its_execution_device(tmp_path: Path) -> None:
    ids = _ids()
    reference = _llama()
    base = _offloaded_llama()
    torch.manual_seed(1)  # the same adapter initialisation as the reference
    offloaded = peftcore.get_peft_model(
        base, peftcore.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    layer = _q_proj(offloaded)
    assert layer.lora_A["default"].weight.device.type == "cpu"  # not meta: the adapter exists
    with torch.no_grad():
        torch.testing.assert_close(offloaded(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)
    # The adapter moves into an offloaded base by file too.
    reference.save_pretrained(tmp_path / "adapter")
    loaded = peftcore.PeftModel.from_pretrained(_offloaded_llama(), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="offloaded by accelerate"):
        offloaded.merge_adapter()


def test_dora_on_an_offloaded_base_is_refused_before_the_model_changes() -> None:
    base = _offloaded_llama()
    with pytest.raises(ValueError, match=r"use_dora=True.*offloaded"):
        peftcore.get_peft_model(base, peftcore.LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    assert not any("lora_" in name for name, _ in base.named_modules())
