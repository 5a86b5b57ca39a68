"""Beyond text: the HF PEFT task guides' adapters on ViT, SegFormer and Whisper, against HF `peft`.

Each guide's `LoraConfig` (image classification: query/value projections + the new `classifier` trained in full;
semantic segmentation: query/value, `bias="lora_only"`, the new `decode_head`; Whisper: q_proj /
v_proj) is built on a tiny model of the family, every trainable tensor perturbed (so nothing passes
at its initial value), saved by one library and loaded by the other on a fresh base: keys, shapes and
outputs (logits; Whisper's greedy generation too) must agree. peftcore leaves `target_modules` unset
to use its defaults for these families; HF PEFT's table has none, so its side names them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from torch import nn

import peftcore

peft = pytest.importorskip("peft")

ATOL = 1e-5


def vit(seed: int = 0) -> nn.Module:
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    return tf.ViTForImageClassification(cfg).eval()


def segformer(seed: int = 0) -> nn.Module:
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[16, 32],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=32,
        num_labels=3,
    )
    return tf.SegformerForSemanticSegmentation(cfg).eval()


def whisper(seed: int = 0) -> nn.Module:
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.WhisperConfig(
        vocab_size=64,
        num_mel_bins=8,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=16,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    return tf.WhisperForConditionalGeneration(cfg).eval()


def _pixels(size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"pixel_values": torch.randn(2, 3, size, size, generator=g)}


def _speech() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "input_features": torch.randn(2, 8, 32, generator=g),
        "decoder_input_ids": torch.tensor([[1, 5, 9, 4], [1, 7, 3, 8]]),
    }


# family -> (tiny model, inputs, the guide's LoraConfig kwargs, HF PEFT's explicit targets)
CASES: dict[str, tuple[Callable[[int], nn.Module], Callable[[], dict[str, torch.Tensor]], dict[str, Any]]] = {
    "vit": (
        vit,
        _pixels,
        {"r": 16, "lora_alpha": 16, "lora_dropout": 0.1, "bias": "none", "modules_to_save": ["classifier"]},
    ),
    "segformer": (
        segformer,
        _pixels,
        {
            "r": 32,
            "lora_alpha": 32,
            "lora_dropout": 0.1,
            "bias": "lora_only",
            "modules_to_save": ["decode_head"],
        },
    ),
    "whisper": (whisper, _speech, {"r": 32, "lora_alpha": 64, "lora_dropout": 0.05, "bias": "none"}),
}
# transformers 5 names the query / value projections q_proj / v_proj in all three families.
HF_TARGETS = {"vit": ["q_proj", "v_proj"], "segformer": ["q_proj", "v_proj"], "whisper": ["q_proj", "v_proj"]}


def _perturb(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, b in model.named_buffers():  # a saved head's batch-norm statistics move in training
            if "modules_to_save" in name and "running_" in name:
                b.add_(torch.rand(b.shape, generator=g) * 0.5)


def _out(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _keys(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


@pytest.mark.parametrize("family", list(CASES))
def test_peftcore_defaults_are_the_guides_targets(family: str) -> None:
    build, _, kwargs = CASES[family]
    model = peftcore.get_peft_model(build(0), peftcore.LoraConfig(**kwargs))
    assert set(model.peft_config["default"].target_modules) == set(HF_TARGETS[family])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n or n.endswith(".bias") for n in trainable)
    head = kwargs.get("modules_to_save")
    if head:  # the new head is trained in full (its copy), the original stays frozen
        assert any(f"{head[0]}.modules_to_save.default." in n for n in trainable)


@pytest.mark.parametrize("family", list(CASES))
def test_adapters_move_both_ways_with_identical_outputs(family: str, tmp_path: Path) -> None:
    build, batch_fn, kwargs = CASES[family]
    batch = batch_fn()
    ours = peftcore.get_peft_model(build(0), peftcore.LoraConfig(**kwargs))
    _perturb(ours, 11)
    theirs = peft.get_peft_model(build(0), peft.LoraConfig(target_modules=HF_TARGETS[family], **kwargs))
    _perturb(theirs, 12)
    base = _out(build(0), batch)
    for name, model in (("ours", ours), ("theirs", theirs)):
        assert not torch.allclose(_out(model, batch), base, atol=1e-4), f"{name}: the adapter changes nothing"
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    assert _keys(tmp_path / "ours") == _keys(tmp_path / "theirs")

    # peftcore's adapter in HF PEFT, HF PEFT's in peftcore: the same outputs as where they were trained.
    in_theirs = peft.PeftModel.from_pretrained(build(0), str(tmp_path / "ours"))
    torch.testing.assert_close(_out(in_theirs, batch), _out(ours, batch), atol=ATOL, rtol=0)
    in_ours = peftcore.PeftModel.from_pretrained(build(0), str(tmp_path / "theirs"))
    torch.testing.assert_close(_out(in_ours, batch), _out(theirs, batch), atol=ATOL, rtol=0)

    config = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    expected = json.loads((tmp_path / "theirs" / "adapter_config.json").read_text())
    assert config["auto_mapping"] == expected["auto_mapping"]
    assert config["auto_mapping"]["base_model_class"] == type(build(0)).__name__
    assert config["modules_to_save"] == expected["modules_to_save"]


def test_whisper_generates_as_hf_peft_and_trains_on_input_features(tmp_path: Path) -> None:
    build, batch_fn, kwargs = CASES["whisper"]
    features = batch_fn()["input_features"]
    ours = peftcore.get_peft_model(build(0), peftcore.LoraConfig(**kwargs))
    _perturb(ours, 5)
    ours.save_pretrained(tmp_path / "a")
    theirs = peft.PeftModel.from_pretrained(build(0), str(tmp_path / "a"))
    gen = {"input_features": features, "max_new_tokens": 6, "do_sample": False}
    with torch.no_grad():
        mine, reference = ours.generate(**gen), theirs.generate(**gen)
    assert torch.equal(mine, reference) and mine.shape[1] > 1

    # Training: labels make Whisper build its decoder inputs; only adapter tensors get gradients.
    seq2seq = peftcore.get_peft_model(build(0), peftcore.LoraConfig(task_type="SEQ_2_SEQ_LM", **kwargs))
    seq2seq.train()
    loss = seq2seq(input_features=features, labels=torch.tensor([[5, 9, 2], [7, 3, 2]])).loss
    loss.backward()
    grads = {n for n, p in seq2seq.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)


def test_auto_peft_model_loads_whisper_vit_and_segformer_adapters(tmp_path: Path) -> None:
    # A base saved on disk (as from the Hub), an adapter saved by each library on it.
    for family in ("whisper", "vit", "segformer"):
        build, batch_fn, kwargs = CASES[family]
        base_dir = tmp_path / f"{family}-base"
        build(0).save_pretrained(base_dir)
        batch = batch_fn()
        hf_kwargs = {"target_modules": HF_TARGETS[family], **kwargs}
        for lib, get_peft_model, config in (
            ("ours", peftcore.get_peft_model, peftcore.LoraConfig(**kwargs)),
            ("theirs", peft.get_peft_model, peft.LoraConfig(**hf_kwargs)),
        ):
            base_cls = type(build(0))
            # Image models get a new head for 5 labels (the base has 3): the loader sizes it.
            extra = {"num_labels": 5, "ignore_mismatched_sizes": True} if family != "whisper" else {}
            model = get_peft_model(base_cls.from_pretrained(base_dir, **extra), config)
            _perturb(model, 7)
            model.save_pretrained(tmp_path / f"{family}-{lib}")
            loaded = peftcore.AutoPeftModel.from_pretrained(str(tmp_path / f"{family}-{lib}"))
            assert type(loaded.get_base_model()) is base_cls
            torch.testing.assert_close(_out(loaded, batch), _out(model, batch), atol=ATOL, rtol=0)
