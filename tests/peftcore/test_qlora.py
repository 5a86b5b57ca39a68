"""QLoRA: LoRA on bitsandbytes 4-bit and 8-bit bases (bitsandbytes 0.50 runs both on CPU).

Every test here failed before bnb.py: on a Linear8bitLt, merge added the update to the raw int8 codes
(the merged output was off by ~0.6 where |out| ~ 0.13); on a Linear4bit, merge crashed with a shape
error (the packed weight is (n, 1)); a layer quantized by another library was wrapped as if it held
floats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import peftcore
from peftcore.tuners.lora import bnb as lora_bnb
from tests import tiny

bnb = pytest.importorskip("bitsandbytes")
KINDS = ("4bit", "8bit")
TARGETS = ["q_proj", "v_proj", "down_proj"]
HIDDEN = 64


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    # Hidden size 64: bitsandbytes' CPU kernel needs every input size >= its block size (64).
    config = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=tiny.VOCAB,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def _load(path: Path, kind: str, dtype: torch.dtype = torch.float32) -> Any:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if kind == "4bit":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    return AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quant, device_map="cpu", dtype=dtype
    )


def _config(**kw: Any) -> peftcore.LoraConfig:
    return peftcore.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, **kw)


def _ids() -> torch.Tensor:
    return torch.randint(0, tiny.VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))


def _layer(model: Any) -> Any:
    return model.base_model.model.model.layers[0].self_attn.q_proj


@pytest.mark.parametrize("kind", KINDS)
def test_lora_wraps_bnb_layers_with_float_adapters_of_the_logical_shape(base_dir: Path, kind: str) -> None:
    model = peftcore.get_peft_model(_load(base_dir, kind), _config())
    layer = _layer(model)
    assert isinstance(layer, lora_bnb.LAYER_CLASSES[kind])
    assert type(layer.get_base_layer()).__name__ == {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}[kind]
    assert layer.lora_A["default"].weight.shape == (4, HIDDEN)
    assert layer.lora_B["default"].weight.shape == (HIDDEN, 4)
    assert layer.lora_A["default"].weight.dtype == torch.float32
    x = torch.randn(3, HIDDEN)
    a, b = layer.lora_A["default"], layer.lora_B["default"]
    expected = layer.get_base_layer()(x) + b(a(x)) * layer.scaling["default"]
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_merge_dequantizes_adds_and_requantizes_like_hf_peft(base_dir: Path, kind: str) -> None:
    peft = pytest.importorskip("peft")
    ours = peftcore.get_peft_model(_load(base_dir, kind), _config())
    theirs = peft.get_peft_model(
        _load(base_dir, kind),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False),
    )
    theirs.load_state_dict(ours.adapter_state_dict(), strict=False)  # the same adapter weights in both
    # Training mode: an inference forward on this CPU (AVX512-BF16) repacks bitsandbytes' 4-bit codes,
    # which HF PEFT's merge does not undo (peftcore's does: the next test).
    ours.train()
    theirs.train()
    ids = _ids()
    with torch.no_grad():
        unmerged = ours(ids).logits
        torch.testing.assert_close(theirs(ids).logits, unmerged, rtol=0, atol=1e-5)
        ours.merge_adapter()
        theirs.merge_adapter()
        merged = ours(ids).logits
        # The same dequantize -> add -> quantize as HF PEFT: the same merged codes, the same outputs.
        torch.testing.assert_close(merged, theirs(ids).logits, rtol=0, atol=1e-5)
        # Merging moves the output only by the re-quantization of the merged weight (adding the
        # update to the int8 codes, as before, moved it by ~0.6).
        assert (merged - unmerged).abs().max() < {"4bit": 0.6, "8bit": 0.05}[kind]
        assert isinstance(_layer(ours).get_base_layer().weight, bnb.nn.Params4bit | bnb.nn.Int8Params)
        ours.unmerge_adapter()
        theirs.unmerge_adapter()
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-5)
        assert not _layer(ours).merged


def test_merge_after_an_inference_forward_reads_the_repacked_4bit_codes_right(base_dir: Path) -> None:
    fresh = peftcore.get_peft_model(_load(base_dir, "4bit"), _config())
    used = peftcore.get_peft_model(_load(base_dir, "4bit"), _config())
    used.load_state_dict(fresh.adapter_state_dict())
    ids = _ids()
    with torch.no_grad():
        fresh.train()
        fresh.merge_adapter()
        merged_fresh = fresh(ids).logits
        used.eval()
        used(ids)  # the inference forward: bitsandbytes repacks the codes for its CPU kernel
        layer = _layer(used)
        repacked = bool(getattr(layer.get_base_layer().weight.quant_state, "packing_format_for_cpu", False))
        expected = lora_bnb.dequantize_weight(layer.get_base_layer()) + layer.get_delta_weight("default")
        used.merge_adapter()
        merged = lora_bnb.dequantize_weight(layer.get_base_layer())
        # The merged weight is the sum, re-quantized (4-bit: a few % error; misread codes: ~100%).
        assert (merged - expected).norm() / expected.norm() < 0.15
        used.train()
        # The same model as merged without the repacking, but for the bf16 scales the repacking kept.
        torch.testing.assert_close(used(ids).logits, merged_fresh, rtol=0, atol=6e-2)
    if not repacked:
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes did not repack (the merge was checked anyway)")


@pytest.mark.parametrize("kind", KINDS)
def test_adapters_move_both_ways_with_hf_peft_on_a_quantized_base(
    base_dir: Path, kind: str, tmp_path: Path
) -> None:
    peft = pytest.importorskip("peft")
    ids = _ids()
    ours = peftcore.get_peft_model(_load(base_dir, kind), _config())
    ours.save_pretrained(tmp_path / "ours")
    theirs = peft.PeftModel.from_pretrained(_load(base_dir, kind), tmp_path / "ours")
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids).logits, rtol=0, atol=1e-5)

    hf = peft.get_peft_model(
        _load(base_dir, kind),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False),
    )
    hf.save_pretrained(tmp_path / "theirs")
    back = peftcore.PeftModel.from_pretrained(_load(base_dir, kind), tmp_path / "theirs")
    assert isinstance(_layer(back), lora_bnb.LAYER_CLASSES[kind])
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_qlora_trains_the_adapter_and_leaves_the_quantized_base_alone(base_dir: Path, kind: str) -> None:
    base = peftcore.prepare_model_for_kbit_training(_load(base_dir, kind))
    model = peftcore.get_peft_model(base, peftcore.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    codes = {n: p.detach().clone() for n, p in model.named_parameters() if not p.is_floating_point()}
    assert codes, "the base holds quantized codes"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = _ids()
    losses = []
    for _ in range(8):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for name, param in model.named_parameters():
        if name in codes:
            assert torch.equal(param, codes[name]), name


def test_prepare_model_for_kbit_training_matches_hf_peft(base_dir: Path) -> None:
    peft = pytest.importorskip("peft")
    ours = peftcore.prepare_model_for_kbit_training(_load(base_dir, "4bit", torch.bfloat16))
    theirs = peft.prepare_model_for_kbit_training(_load(base_dir, "4bit", torch.bfloat16))
    got = {n: (p.dtype, p.requires_grad) for n, p in ours.named_parameters()}
    want = {n: (p.dtype, p.requires_grad) for n, p in theirs.named_parameters()}
    assert got == want
    # Layer norms and embeddings were bf16 and are fp32 now; nothing trains yet.
    assert ours.model.norm.weight.dtype == torch.float32 and not any(
        p.requires_grad for p in ours.parameters()
    )
    assert ours.is_gradient_checkpointing and theirs.is_gradient_checkpointing
    # Reentrant checkpointing of a frozen model still reaches the adapters: the embeddings' output
    # requires grad.
    out = ours.get_input_embeddings()(_ids())
    assert out.requires_grad


def test_merge_into_dequantized_gives_plain_layers_with_the_exact_merged_weight(base_dir: Path) -> None:
    model = peftcore.get_peft_model(_load(base_dir, "4bit"), _config())
    model.train()  # the float32 kernel (inference mode may use a bf16 one on this CPU)
    ids = _ids()
    with torch.no_grad():
        adapted = model(ids).logits
    layer = _layer(model)
    expected_q = lora_bnb.dequantize_weight(layer.get_base_layer()) + layer.get_delta_weight("default")
    plain = lora_bnb.merge_into_dequantized(model, dtype=torch.float32)
    assert not any(isinstance(m, bnb.nn.Linear4bit | peftcore.tuners.BaseTunerLayer) for m in plain.modules())
    assert not hasattr(plain.config, "quantization_config") and not getattr(plain, "is_loaded_in_4bit", False)
    q_proj = plain.model.layers[0].self_attn.q_proj
    assert type(q_proj) is nn.Linear and q_proj.weight.dtype == torch.float32
    torch.testing.assert_close(q_proj.weight, expected_q, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, adapted, rtol=1e-4, atol=1e-4)


class _PackedLinear(nn.Linear):
    """Stands in for another library's quantized layer: an nn.Linear subclass with int8 codes."""

    def __init__(self) -> None:
        super().__init__(32, 32)
        self.weight = nn.Parameter(torch.zeros(32, 32, dtype=torch.int8), requires_grad=False)


class _GptqLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("qweight", torch.zeros(4, 32, dtype=torch.int32))
        self.in_features = self.out_features = 32


@pytest.mark.parametrize("layer", [_PackedLinear, _GptqLike], ids=["int8-linear-subclass", "gptq-like"])
def test_a_layer_quantized_by_another_library_is_refused(layer: type[nn.Module]) -> None:
    model = tiny.build("llama")
    model.model.layers[0].self_attn.q_proj = layer()
    before = {n for n, _ in model.named_modules()}
    with pytest.raises(
        ValueError, match=r"q_proj.*quantized in a way peftcore does not support.*bitsandbytes"
    ):
        peftcore.get_peft_model(model, peftcore.LoraConfig(r=4, target_modules=["q_proj"]))
    assert {n for n, _ in model.named_modules()} == before  # nothing was wrapped


# -- other methods on quantized bases ----------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_ia3_on_a_quantized_base_matches_hf_peft_and_merges_through_dequantization(
    base_dir: Path, kind: str, tmp_path: Path
) -> None:
    peft = pytest.importorskip("peft")
    targets, feedforward = ["q_proj", "v_proj", "down_proj"], ["down_proj"]
    ours = peftcore.get_peft_model(
        _load(base_dir, kind),
        peftcore.IA3Config(target_modules=targets, feedforward_modules=feedforward, init_ia3_weights=False),
    )
    ours.train()  # the float32 kernel (see the merge test above)
    ours.save_pretrained(tmp_path / "ia3")
    theirs = peft.PeftModel.from_pretrained(_load(base_dir, kind), tmp_path / "ia3").train()
    ids = _ids()
    with torch.no_grad():
        adapted = ours(ids).logits
        torch.testing.assert_close(theirs(ids).logits, adapted, rtol=0, atol=1e-5)
        layer = ours.base_model.model.model.layers[0].self_attn.q_proj
        base = layer.get_base_layer()
        expected = lora_bnb.dequantize_weight(base) * layer.ia3_l["default"].reshape(-1, 1)
        ours.merge_adapter()
        # The scaled weight, quantized again (int8: a few tenths of a percent; 4-bit: a few percent).
        merged = lora_bnb.dequantize_weight(base)
        assert (merged - expected).norm() / expected.norm() < {"4bit": 0.15, "8bit": 0.02}[kind]
        assert (ours(ids).logits - adapted).abs().max() < {"4bit": 0.6, "8bit": 0.05}[kind]


@pytest.mark.parametrize(
    "config",
    [
        peftcore.LoHaConfig(r=4, target_modules=["q_proj"]),
        peftcore.LoKrConfig(r=4, target_modules=["q_proj"]),
        peftcore.AdaLoraConfig(target_r=2, init_r=4, total_step=10, target_modules=["q_proj"]),
    ],
    ids=["loha", "lokr", "adalora"],
)
def test_methods_that_cannot_read_quantized_weights_refuse_them_first(base_dir: Path, config: Any) -> None:
    base = _load(base_dir, "4bit")
    before = [n for n, _ in base.named_modules()]
    with pytest.raises(ValueError, match=r"q_proj.*bitsandbytes Linear4bit.*\(IA\)³ and LoRA can"):
        peftcore.get_peft_model(base, config)
    assert [n for n, _ in base.named_modules()] == before
