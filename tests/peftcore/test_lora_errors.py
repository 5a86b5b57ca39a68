"""Bad input gets a clear error (parameter, value, fix), raised before any weight is touched."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import peftcore.io
from peftcore import LoraConfig, PeftConfig, PeftModel, get_peft_model
from peftcore.modules_to_save import ModulesToSaveWrapper
from peftcore.tuners.lora.layer import LoraLayer
from tests import tiny


# -- helpers --------------------------------------------------------------------------------------
def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything an error must leave alone: module tree, tensors (bitwise), requires_grad flags."""
    return {
        "modules": [(n, type(m)) for n, m in model.named_modules()],
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert after["modules"] == before["modules"], "the module tree changed"
    assert not any(isinstance(m, LoraLayer | ModulesToSaveWrapper) for m in model.modules())
    assert after["grad"] == before["grad"], "requires_grad flags changed"
    assert set(after["tensors"]) == set(before["tensors"])
    for key, value in before["tensors"].items():
        assert torch.equal(after["tensors"][key], value), f"{key} changed"


def saved_adapter(tmp_path: Path, **config: Any) -> Path:
    """A real adapter for tiny llama (non-zero B), saved to tmp_path/adapter."""
    pm = get_peft_model(
        tiny.build("llama"), LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **config)
    )
    directory = tmp_path / "adapter"
    pm.save_pretrained(directory)
    return directory


def edit_config(directory: Path, **changes: Any) -> None:
    path = directory / "adapter_config.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


_DROP = object()


# -- config values --------------------------------------------------------------------------------
@pytest.mark.parametrize("r", [0, -1, 2.5, True, "8"])
def test_bad_rank(r: Any) -> None:
    with pytest.raises(ValueError, match=rf"r={re.escape(repr(r))} must be a positive integer.*r=8"):
        LoraConfig(r=r)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_dropout(dropout: float) -> None:
    with pytest.raises(
        ValueError, match=rf"lora_dropout={re.escape(repr(dropout))} must be in \[0, 1\).*0\.0"
    ):
        LoraConfig(lora_dropout=dropout)


def test_bad_rank_pattern_value() -> None:
    with pytest.raises(ValueError, match=r"rank_pattern\['q_proj'\]=0 must be a positive integer"):
        LoraConfig(rank_pattern={"q_proj": 0})


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"bias": "some"}, r"bias='some' must be one of 'none', 'all', 'lora_only'"),
        ({"init_lora_weights": "loftq"}, r"init_lora_weights='loftq' is not supported.*'gaussian'.*'olora'"),
        ({"lora_alpha": float("inf")}, r"lora_alpha=inf must be a finite number"),
        ({"task_type": "TRANSLATION"}, r"Invalid task type: 'TRANSLATION'.*CAUSAL_LM"),
        ({"modules_to_save": "lm_head"}, r"modules_to_save='lm_head' must be a list.*\['lm_head'\]"),
        ({"target_modules": [1]}, r"target_modules entries must be module-name strings"),
        (
            {"layers_pattern": "layers"},
            r"layers_to_transform` must also be specified.*layers_pattern='layers'",
        ),
    ],
)
def test_bad_config_values(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises((ValueError, TypeError), match=pattern):
        LoraConfig(**kwargs)


# -- targets --------------------------------------------------------------------------------------
def test_targets_matching_nothing_list_real_names() -> None:
    model = tiny.build("llama")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"target_modules=\['qproj'\] matched no module") as info:
        get_peft_model(model, LoraConfig(target_modules=["qproj"]))
    assert all(name in str(info.value) for name in ("q_proj", "k_proj", "v_proj"))
    assert_unchanged(model, before)

    with pytest.raises(ValueError, match=r"target_modules='.*nothing' matched no module.*q_proj"):
        get_peft_model(model, LoraConfig(target_modules=r".*nothing"))
    with pytest.raises(ValueError, match=r"layers_to_transform=\[7\]"):
        get_peft_model(model, LoraConfig(target_modules=["q_proj"], layers_to_transform=[7]))
    assert_unchanged(model, before)


class _Mystery(nn.Module):
    """An architecture with no default LoRA targets."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"model_type": "mystery"})()
        self.proj_in = nn.Linear(4, 4)
        self.proj_out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.proj_in(x))


def test_unknown_architecture_without_targets() -> None:
    model = _Mystery()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"target_modules is not set and model_type='mystery'") as info:
        get_peft_model(model, LoraConfig())
    assert "proj_in" in str(info.value) and "all-linear" in str(info.value)
    assert_unchanged(model, before)
    plain = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"model_type=None has no default LoRA targets"):
        get_peft_model(plain, LoraConfig())


def test_unwrappable_module_type_is_refused_before_any_wrap() -> None:
    model = tiny.build("bert")
    before = snapshot(model)
    # "query" alone would work; the LayerNorm must abort the whole injection, not leave half of it.
    config = LoraConfig(task_type="SEQ_CLS", target_modules=["query", "attention.output.LayerNorm"])
    with pytest.raises(
        ValueError, match=r"'bert\.encoder\.layer\.0\.attention\.output\.LayerNorm' is a LayerNorm"
    ) as info:
        get_peft_model(model, config)
    assert "nn.Linear" in str(info.value) and "target_modules" in str(info.value)
    assert_unchanged(model, before)


class _AttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.mha = nn.MultiheadAttention(8, 2)


def test_dora_on_multihead_attention_is_refused_before_any_wrap() -> None:
    model = _AttentionNet()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"MultiheadAttention does not support DoRA.*use_dora to False"):
        get_peft_model(model, LoraConfig(target_modules=["proj", "mha"], use_dora=True))
    assert_unchanged(model, before)


def test_target_also_in_modules_to_save_is_saved_not_adapted() -> None:
    """As in HF PEFT: a module both targeted and saved is trained in full, with a warning saying so."""
    config = LoraConfig(target_modules=["q_proj", "lm_head"], modules_to_save=["lm_head"])
    with pytest.warns(UserWarning, match=r"'lm_head' matches target_modules but is in modules_to_save"):
        pm = get_peft_model(tiny.build("llama"), config)
    model = pm.get_base_model()
    assert isinstance(model.lm_head, ModulesToSaveWrapper)
    assert not any(isinstance(m, LoraLayer) for m in model.lm_head.modules())
    assert isinstance(model.model.layers[0].self_attn.q_proj, LoraLayer)


# -- adapter names --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a/b", "../escape", "a\\b", "..", "", "v1.2"])
def test_adapter_name_that_is_not_a_plain_name(name: str, tmp_path: Path) -> None:
    model = tiny.build("llama")
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"adapter_name={re.escape(repr(name))}"):
        get_peft_model(model, LoraConfig(), adapter_name=name)
    assert_unchanged(model, before)

    pm = get_peft_model(tiny.build("llama"), LoraConfig())
    with pytest.raises(ValueError, match=rf"adapter_name={re.escape(repr(name))}"):
        pm.add_adapter(name, LoraConfig())
    assert list(pm.peft_config) == ["default"]
    with pytest.raises(ValueError, match=rf"adapter_name={re.escape(repr(name))}"):
        PeftModel.from_pretrained(model, saved_adapter(tmp_path), adapter_name=name)
    assert_unchanged(model, before)


# -- loading broken or mismatched adapters --------------------------------------------------------
def test_shape_mismatch_names_key_and_shapes_and_leaves_model_clean(tmp_path: Path) -> None:
    directory = saved_adapter(tmp_path, r=8)
    edit_config(directory, r=4)  # the file's tensors are rank 8
    model = tiny.build("llama")
    before = snapshot(model)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    with pytest.raises(
        ValueError, match=rf"{re.escape(key)}' has shape \(8, 32\) but the model expects \(4, 32\)"
    ):
        PeftModel.from_pretrained(model, directory)
    assert_unchanged(model, before)


def test_shape_mismatch_on_a_different_base(tmp_path: Path) -> None:
    import transformers as tf

    directory = saved_adapter(tmp_path)
    cfg = tf.LlamaConfig(
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=tiny.VOCAB,
    )
    model = tf.LlamaForCausalLM(cfg).eval()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"has shape \(8, 32\) but the model expects \(8, 48\)"):
        PeftModel.from_pretrained(model, directory)
    assert_unchanged(model, before)


def test_load_adapter_mismatch_removes_only_the_new_adapter(tmp_path: Path) -> None:
    directory = saved_adapter(tmp_path)
    edit_config(directory, r=2)
    pm = PeftModel.from_pretrained(tiny.build("llama"), saved_adapter(tmp_path / "good"))
    expected = tiny.output(pm, tiny.inputs("llama"))
    with pytest.raises(ValueError, match=r"has shape \(8, 32\) but the model expects \(2, 32\)"):
        pm.load_adapter(directory, adapter_name="bad")
    assert list(pm.peft_config) == ["default"]
    assert not any(".bad" in n for n, _ in pm.named_parameters())
    torch.testing.assert_close(tiny.output(pm, tiny.inputs("llama")), expected, atol=0, rtol=0)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_safetensors(damage: str, tmp_path: Path) -> None:
    directory = saved_adapter(tmp_path)
    weights = directory / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"\x00garbage" * 50, "empty": b""}[damage]
    )
    model = tiny.build("llama")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"not a readable safetensors file.*truncated or corrupt") as info:
        PeftModel.from_pretrained(model, directory)
    assert str(weights) in str(info.value)
    assert_unchanged(model, before)


def test_config_without_peft_type(tmp_path: Path) -> None:
    directory = saved_adapter(tmp_path)
    edit_config(directory, peft_type=_DROP)
    with pytest.raises(TypeError, match=r"missing required keys: \{'peft_type'\}.*\"LORA\""):
        PeftConfig.from_pretrained(directory)
    model = tiny.build("llama")
    before = snapshot(model)
    with pytest.raises(TypeError, match=r"missing required keys"):
        PeftModel.from_pretrained(model, directory)
    assert_unchanged(model, before)


def test_unknown_peft_type_and_broken_json(tmp_path: Path) -> None:
    directory = saved_adapter(tmp_path)
    edit_config(directory, peft_type="OFT")
    with pytest.raises(ValueError, match=r"peft_type='OFT' is not supported by peftcore; supported: .*LORA"):
        PeftConfig.from_pretrained(directory)
    (directory / "adapter_config.json").write_text('{"peft_type": "LORA",')
    with pytest.raises(ValueError, match=r"adapter_config\.json is not valid JSON.*re-save"):
        PeftConfig.from_pretrained(directory)


def test_missing_adapter_directory(tmp_path: Path) -> None:
    model = tiny.build("llama")
    before = snapshot(model)
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json does not exist"):
        PeftModel.from_pretrained(model, tmp_path)
    assert_unchanged(model, before)


def test_unknown_config_key_warns_and_is_ignored(tmp_path: Path) -> None:
    directory = saved_adapter(tmp_path)
    expected = tiny.output(PeftModel.from_pretrained(tiny.build("llama"), directory), tiny.inputs("llama"))
    edit_config(directory, shiny_future_option={"x": 1})
    with pytest.warns(
        UserWarning,
        match=r"Unexpected keyword arguments \['shiny_future_option'\] for class LoraConfig, these are ignored",
    ):
        loaded = PeftModel.from_pretrained(tiny.build("llama"), directory)
    assert not hasattr(loaded.peft_config["default"], "shiny_future_option")
    torch.testing.assert_close(tiny.output(loaded, tiny.inputs("llama")), expected, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("use_qalora", True),
        ("layer_replication", [[0, 2]]),
        ("alora_invocation_tokens", [1]),
    ],
)
def test_unimplemented_feature_turned_on_raises(key: str, value: Any, tmp_path: Path) -> None:
    directory = saved_adapter(tmp_path)
    edit_config(directory, **{key: value})
    model = tiny.build("llama")
    before = snapshot(model)
    with pytest.raises(
        ValueError, match=rf"sets {key}={re.escape(repr(value))}, a feature peftcore does not implement"
    ):
        PeftModel.from_pretrained(model, directory)
    assert_unchanged(model, before)


def test_unimplemented_feature_left_off_loads_silently(tmp_path: Path) -> None:
    directory = saved_adapter(tmp_path)
    edit_config(
        directory, lora_bias=False, use_qalora=False, layer_replication=None, megatron_core="megatron.core"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PeftModel.from_pretrained(tiny.build("llama"), directory)


# -- saving ---------------------------------------------------------------------------------------
def _listing(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def test_failed_save_leaves_previous_adapter_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pm = get_peft_model(tiny.build("llama"), LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False))
    pm.save_pretrained(tmp_path)
    before = _listing(tmp_path)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(1.0)

    def broken_writer(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
        with open(path, "wb") as fh:
            fh.write(b"half a file")  # then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(peftcore.io, "save_file", broken_writer)
    with pytest.raises(OSError, match="No space left"):
        pm.save_pretrained(tmp_path)
    assert _listing(tmp_path) == before, "previous files must be byte-identical, with no temp files left"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_failed_config_write_leaves_previous_adapter_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = get_peft_model(tiny.build("llama"), LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False))
    pm.save_pretrained(tmp_path)
    before = _listing(tmp_path)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(1.0)
    real_fsync = os.fsync

    def fsync_failing_on_config(fd: int) -> None:
        # The disk fails while flushing adapter_config.json (Linux: the fd's path is in /proc).
        if "adapter_config.json" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_on_config)
    with pytest.raises(OSError, match="Input/output error"):
        pm.save_pretrained(tmp_path)
    # Weights and config must stay a matching pair: new weights beside the old config is a corrupt adapter.
    assert _listing(tmp_path) == before


def test_save_into_a_file_path(tmp_path: Path) -> None:
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    pm = get_peft_model(tiny.build("llama"), LoraConfig())
    with pytest.raises(ValueError, match=r"save_directory=.*is a file; pass a directory"):
        pm.save_pretrained(target)
    with pytest.raises(
        ValueError, match=r"selected_adapters \['nope'\] do not exist; available: \['default'\]"
    ):
        pm.save_pretrained(tmp_path / "out", selected_adapters=["nope"])
    assert not (tmp_path / "out").exists()
