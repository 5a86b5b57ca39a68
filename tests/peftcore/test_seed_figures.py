"""The quick tour's figures (SEED.md), reproduced from the architectures alone on the meta device.

- mt0-large + LoraConfig(SEQ_2_SEQ_LM, r=8, lora_alpha=32, lora_dropout=0.1) prints
  `trainable params: 2,359,296 || all params: 1,231,940,608 || trainable%: 0.1915`.
- opt-350m + LoRA r=16 on q_proj/v_proj in fp32 saves an adapter file of about 6.3 MB, while the full
  model is about 700 MB (fp16).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peftcore import LoraConfig, PeftModel, TaskType, get_peft_model

MT0_FIGURE = "trainable params: 2,359,296 || all params: 1,231,940,608 || trainable%: 0.1915"


@pytest.fixture(scope="module")
def mt0_large() -> nn.Module:
    """bigscience/mt0-large's architecture on the meta device, with its own (untied) lm_head."""
    import transformers as tf

    config = tf.MT5Config(
        d_model=1024,
        d_ff=2816,
        d_kv=64,
        num_heads=16,
        num_layers=24,
        num_decoder_layers=24,
        vocab_size=250112,
        feed_forward_proj="gated-gelu",
    )
    with torch.device("meta"):
        model = tf.MT5ForConditionalGeneration(config)
    # transformers ties MT5's lm_head to the shared embedding; the real checkpoint has its own.
    model.lm_head.weight = nn.Parameter(torch.empty_like(model.lm_head.weight))
    assert model.lm_head.weight is not model.shared.weight
    return model


def _mt0_config() -> LoraConfig:
    return LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM, inference_mode=False, r=8, lora_alpha=32, lora_dropout=0.1
    )


def test_mt0_large_trainable_parameters(mt0_large: nn.Module, capsys: pytest.CaptureFixture[str]) -> None:
    model = copy.deepcopy(mt0_large)
    assert sum(p.numel() for p in model.parameters()) == 1_229_581_312  # the base alone
    peft_model = get_peft_model(model, _mt0_config())
    peft_model.print_trainable_parameters()
    assert capsys.readouterr().out == MT0_FIGURE + "\n"
    assert peft_model.get_nb_trainable_parameters() == (2_359_296, 1_231_940_608)
    # q and v in every attention block: 24 encoder self + 24 decoder self + 24 cross = 72 blocks.
    lora = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert len(lora) == 72 * 2 * 2
    assert all(".lora_A.default." in n or ".lora_B.default." in n for n in lora)


def test_mt0_large_figure_matches_hf_peft(mt0_large: nn.Module, capsys: pytest.CaptureFixture[str]) -> None:
    peft = pytest.importorskip("peft")
    hf_model = peft.get_peft_model(
        copy.deepcopy(mt0_large),
        peft.LoraConfig(task_type="SEQ_2_SEQ_LM", inference_mode=False, r=8, lora_alpha=32, lora_dropout=0.1),
    )
    hf_model.print_trainable_parameters()
    assert capsys.readouterr().out.strip() == MT0_FIGURE


def _materialise_trainable(model: nn.Module) -> None:
    """Give every trainable (adapter) parameter real CPU data; the frozen base stays on meta."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.requires_grad and param.is_meta:
                data = torch.randn(param.shape, dtype=param.dtype, generator=generator)
                setattr(module, name, nn.Parameter(data))


def test_opt_350m_adapter_file_is_about_6_3_mb(tmp_path: Path) -> None:
    import transformers as tf

    # facebook/opt-350m: hidden 1024, 24 layers, 16 heads, FFN 4096, embeddings projected from 512.
    config = tf.OPTConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        ffn_dim=4096,
        num_attention_heads=16,
        vocab_size=50272,
        word_embed_proj_dim=512,
        max_position_embeddings=2048,
        do_layer_norm_before=False,
    )
    with torch.device("meta"):
        base = tf.OPTForCausalLM(config)
    n_base = sum(p.numel() for p in base.parameters())
    assert n_base == 331_196_416
    assert 0.6e9 < n_base * 2 < 0.7e9, "the fp16 checkpoint is about 700 MB"

    peft_model = get_peft_model(
        base, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"])
    )
    _materialise_trainable(peft_model)
    peft_model.save_pretrained(tmp_path)

    path = tmp_path / "adapter_model.safetensors"
    size = os.path.getsize(path)
    assert 6.2e6 <= size <= 6.4e6, f"adapter file is {size:,} bytes; the tour says about 6.3 MB"
    tensors = load_file(str(path))
    assert len(tensors) == 24 * 2 * 2
    assert all(t.dtype == torch.float32 for t in tensors.values())
    assert {tuple(t.shape) for t in tensors.values()} == {(16, 1024), (1024, 16)}
    assert sum(t.numel() for t in tensors.values()) * 4 == 6_291_456  # the rest is the JSON header
    assert size < n_base * 2 / 100, "the adapter is ~1% of the fp16 model"


def test_opt_350m_adapter_loads_back(tmp_path: Path) -> None:
    """The seed's save/load path on a meta base: the file's tensors become the adapter's data."""
    import transformers as tf

    config = tf.OPTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        ffn_dim=128,
        num_attention_heads=4,
        vocab_size=128,
        word_embed_proj_dim=32,
    )
    torch.manual_seed(0)
    source = get_peft_model(
        tf.OPTForCausalLM(config),
        LoraConfig(task_type="CAUSAL_LM", r=16, target_modules=["q_proj", "v_proj"]),
    )
    source.save_pretrained(tmp_path)
    with torch.device("meta"):
        meta_base = tf.OPTForCausalLM(config)
    loaded = PeftModel.from_pretrained(meta_base, tmp_path)
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    from peftcore import get_peft_model_state_dict

    state = get_peft_model_state_dict(loaded)
    assert set(state) == set(saved)
    for key, tensor in saved.items():
        assert not state[key].is_meta and torch.equal(state[key], tensor), key
