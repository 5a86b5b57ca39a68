"""Prompt tuning, P-tuning and prefix tuning against Hugging Face `peft` (a test-only oracle).

For every method variant × tiny architecture (causal LM, seq2seq LM, sequence and token
classification where HF PEFT supports the pair) both libraries build the adapter on identical bases,
perturb it, and save it; each file is loaded by the other library and must give identical outputs.
`generate` is checked against greedy decoding by full forward passes of HF PEFT's model (HF PEFT's
own `generate` is not the oracle: on transformers 5 it disagrees with its forward for several of
these cases). Then the behaviour peftcore owns: training moves only the prompt, several adapters,
TEXT init, and the refusals.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from torch import nn

import peftcore
from tests import tiny
from tests.peftcore.methods import perturb

peft = pytest.importorskip("peft")

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "prompt_tuning": ("PromptTuningConfig", {}),
    "prompt_tuning_vocab": ("PromptTuningConfig", {"prompt_tuning_init": "SAMPLE_VOCAB"}),
    "p_tuning_mlp": ("PromptEncoderConfig", {"encoder_hidden_size": 16}),
    "p_tuning_lstm": (
        "PromptEncoderConfig",
        {"encoder_reparameterization_type": "LSTM", "encoder_hidden_size": 8},
    ),
    "prefix": ("PrefixTuningConfig", {}),
    "prefix_projection": ("PrefixTuningConfig", {"prefix_projection": True, "encoder_hidden_size": 16}),
}
ARCHS = ("llama", "gpt2", "opt", "t5", "bert", "bert_tokens")
TASKS = {**tiny.TASK, "bert_tokens": "TOKEN_CLS"}
# HF PEFT refuses prefix tuning on BERT ("Model does not support past key values").
CASES = [(v, a) for v in VARIANTS for a in ARCHS if not (v.startswith("prefix") and a.startswith("bert"))]
GENERATIVE = [(v, a) for v in VARIANTS for a in ("llama", "gpt2", "opt", "t5")]
N_TOKENS = 3
# A trained encoder's output and the same output read back from the file can differ in the last bit
# (LSTM kernels): far below any effect of the adapter, which the tests check is there.
ATOL = 1e-5


def build_base(arch: str) -> nn.Module:
    if arch != "bert_tokens":
        return tiny.build(arch)
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.BertConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=tiny.VOCAB,
        max_position_embeddings=64,
        num_labels=3,
    )
    return tf.BertForTokenClassification(cfg).eval()


def inputs(arch: str) -> dict[str, torch.Tensor]:
    return tiny.inputs("bert" if arch == "bert_tokens" else arch)


def config(lib: Any, variant: str, arch: str, **overrides: Any) -> Any:
    name, kwargs = VARIANTS[variant]
    fields = {"task_type": TASKS[arch], "num_virtual_tokens": N_TOKENS, **kwargs, **overrides}
    return getattr(lib, name)(**fields)


def logits(model: Any, arch: str) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs(arch)).logits


def file_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(os.path.join(directory, "adapter_model.safetensors"), "pt") as fh:
        return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118


@pytest.fixture(scope="module", autouse=True)
def _quiet_one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("variant", "arch"), CASES, ids=[f"{v}-{a}" for v, a in CASES])
def test_each_library_loads_the_others_adapter_with_identical_outputs(
    variant: str, arch: str, tmp_path: Path
) -> None:
    base = build_base(arch)
    models, dirs = {}, {}
    for seed, lib in enumerate((peftcore, peft)):
        torch.manual_seed(seed)
        model = lib.get_peft_model(copy.deepcopy(base), config(lib, variant, arch))
        perturb(model, seed=seed + 1, scale=0.3)
        dirs[lib.__name__] = tmp_path / lib.__name__
        model.save_pretrained(dirs[lib.__name__])
        models[lib.__name__] = model
    pc, hf = models["peftcore"], models["peft"]
    assert pc.get_nb_trainable_parameters() == hf.get_nb_trainable_parameters()
    assert file_shapes(dirs["peftcore"]) == file_shapes(dirs["peft"])
    assert not torch.allclose(logits(pc, arch), logits(hf, arch), atol=1e-4)  # different adapters

    in_peft = peft.PeftModel.from_pretrained(copy.deepcopy(base), dirs["peftcore"])
    torch.testing.assert_close(logits(in_peft, arch), logits(pc, arch), atol=ATOL, rtol=0)
    in_peftcore = peftcore.PeftModel.from_pretrained(copy.deepcopy(base), dirs["peft"])
    torch.testing.assert_close(logits(in_peftcore, arch), logits(hf, arch), atol=ATOL, rtol=0)

    hf_config = peft.PeftConfig.from_pretrained(dirs["peftcore"])
    pc_config = peftcore.PeftConfig.from_pretrained(dirs["peft"])
    assert type(hf_config).__name__ == type(pc_config).__name__ == VARIANTS[variant][0]
    hf_fields, pc_fields = hf_config.to_dict(), pc_config.to_dict()
    for key in pc_fields.keys() - {"peft_version", "base_model_name_or_path", "modules_to_save"}:
        assert plain(pc_fields[key]) == plain(hf_fields[key]), key


def _tensors(prompt: Any) -> list[torch.Tensor]:
    """A prompt as plain tensors: the embeddings, or every layer's keys and values of a cache."""
    if isinstance(prompt, torch.Tensor):
        return [prompt]
    caches = [prompt.self_attention_cache] if hasattr(prompt, "self_attention_cache") else [prompt]
    return [t for cache in caches for layer in cache.layers for t in (layer.keys, layer.values)]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_get_prompt_and_the_saved_embedding_match_hf(variant: str, arch: str, tmp_path: Path) -> None:
    base = build_base(arch)
    torch.manual_seed(0)
    ours = peftcore.get_peft_model(copy.deepcopy(base), config(peftcore, variant, arch))
    perturb(ours, seed=1, scale=0.3)
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    saved = ours.get_prompt_embedding_to_save("default")
    assert not saved.requires_grad
    with safe_open(os.path.join(tmp_path, "adapter_model.safetensors"), "pt") as fh:
        torch.testing.assert_close(saved, fh.get_tensor("prompt_embeddings"), atol=ATOL, rtol=0)
    if variant in (
        "prompt_tuning",
        "prompt_tuning_vocab",
        "prefix",
    ):  # HF, loaded for inference, has no encoder to run
        torch.testing.assert_close(saved, theirs.get_prompt_embedding_to_save("default"), atol=ATOL, rtol=0)
    mine = _tensors(ours.get_prompt(batch_size=2))
    hf = _tensors(theirs.get_prompt(batch_size=2))
    assert len(mine) == len(hf) > 0
    for a, b in zip(mine, hf, strict=True):
        assert a.shape[0] == 2
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="no adapter named 'other'"):
        ours.get_prompt_embedding_to_save("other")


def test_get_prompt_is_for_prompt_learning_only() -> None:
    lora = peftcore.get_peft_model(tiny.build("llama"), peftcore.LoraConfig(task_type="CAUSAL_LM"))
    with pytest.raises(ValueError, match="get_prompt is for prompt-learning adapters"):
        lora.get_prompt(batch_size=1)


def plain(value: Any) -> Any:
    """A config value without enum wrappers (peft keeps its enums in `to_dict`)."""
    return getattr(value, "value", value)


def greedy(model: Any, arch: str, batch: dict[str, torch.Tensor], steps: int) -> torch.Tensor:
    """Greedy decoding by full forward passes (no cache): the reference for `generate`."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        if arch == "t5":
            out = torch.zeros(ids.shape[0], 1, dtype=torch.long)
            for _ in range(steps):
                step = model(input_ids=ids, attention_mask=mask, decoder_input_ids=out).logits[:, -1]
                out = torch.cat([out, step.argmax(-1, keepdim=True)], 1)
            return out
        for _ in range(steps):
            step = model(input_ids=ids, attention_mask=mask).logits[:, -1]
            ids = torch.cat([ids, step.argmax(-1, keepdim=True)], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        return ids


@pytest.mark.parametrize(("variant", "arch"), GENERATIVE, ids=[f"{v}-{a}" for v, a in GENERATIVE])
def test_generate_matches_greedy_decoding_of_hf_peft_forward(variant: str, arch: str, tmp_path: Path) -> None:
    base = build_base(arch)
    torch.manual_seed(5)
    source = peft.get_peft_model(copy.deepcopy(base), config(peft, variant, arch))
    perturb(source, seed=1, scale=3.0)
    source.save_pretrained(tmp_path)
    batch = inputs(arch)
    batch.pop("decoder_input_ids", None)
    reference = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    expected = greedy(reference, arch, batch, 6)
    # The adapter changes the next-token scores (the tiny models' argmax may not move).
    adapted, plain = logits(reference, arch)[:, -1], logits(copy.deepcopy(base), arch)[:, -1]
    assert not torch.allclose(adapted, plain, atol=1e-3)
    model = peftcore.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    generated = model.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(generated, expected)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_step_moves_only_the_prompt_and_loss_skips_virtual_tokens(variant: str) -> None:
    model = peftcore.get_peft_model(tiny.build("llama"), config(peftcore, variant, "llama"))
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("prompt_encoder.") for n in trainable)
    batch = tiny.inputs("llama")
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable
    # The loss of the same batch on the plain model with the prompt's embeddings written in front
    # (labels -100 on the virtual tokens) is what the PeftModel computes.
    if VARIANTS[variant][0] != "PrefixTuningConfig":
        model.eval()
        with torch.no_grad():
            loss = model(**batch, labels=batch["input_ids"]).loss
            encoder = model.prompt_encoder["default"]
            prompts = encoder.batch_prompts(2)
            embeds = torch.cat([prompts, model.get_input_embeddings()(batch["input_ids"])], 1)
            labels = torch.cat([torch.full((2, N_TOKENS), -100), batch["input_ids"]], 1)
            mask = torch.cat([torch.ones(2, N_TOKENS, dtype=torch.long), batch["attention_mask"]], 1)
            manual = model.get_base_model()(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        torch.testing.assert_close(loss, manual)


@pytest.mark.parametrize("direction", ["peftcore-to-peft", "peft-to-peftcore"])
@pytest.mark.parametrize("variant", ["prompt_tuning", "p_tuning_mlp", "prefix"])
def test_two_adapters_round_trip(variant: str, direction: str, tmp_path: Path) -> None:
    writer, reader = (peftcore, peft) if direction == "peftcore-to-peft" else (peft, peftcore)
    model = writer.get_peft_model(tiny.build("opt"), config(writer, variant, "opt"))
    model.add_adapter("other", config(writer, variant, "opt"))
    for seed, name in enumerate(("default", "other")):
        model.set_adapter(name)
        perturb(model, seed=seed + 7, scale=0.3)
    expected = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        expected[name] = logits(model, "opt")
    model.save_pretrained(tmp_path)
    loaded = reader.PeftModel.from_pretrained(tiny.build("opt"), tmp_path)
    loaded.load_adapter(tmp_path / "other", adapter_name="other")
    assert not torch.allclose(expected["default"], expected["other"], atol=1e-4)
    for name, value in expected.items():
        loaded.set_adapter(name)
        torch.testing.assert_close(logits(loaded, "opt"), value, atol=1e-6, rtol=0, msg=name)
    if reader is peftcore:
        loaded.delete_adapter("other")
        assert list(loaded.peft_config) == ["default"]
        torch.testing.assert_close(logits(loaded, "opt"), expected["default"], atol=1e-6, rtol=0)


def word_tokenizer(directory: Path) -> Path:
    """A word-level tokenizer saved to `directory` (ids below the tiny models' vocabulary)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "classify": 5, "the": 9, "sentiment": 17, "of": 23, "review": 42}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(directory)
    return directory


@pytest.mark.parametrize(
    ("text", "ids"),
    [("classify the review", [5, 9, 42, 5, 9]), ("the sentiment of the review of the", [9, 17, 23, 9, 42])],
)
def test_text_init_starts_from_the_texts_token_embeddings_like_hf(
    text: str, ids: list[int], tmp_path: Path
) -> None:
    tokenizer = str(word_tokenizer(tmp_path / "tok"))
    kwargs = {
        "prompt_tuning_init": "TEXT",
        "prompt_tuning_init_text": text,
        "tokenizer_name_or_path": tokenizer,
    }
    base = tiny.build("llama")
    pc = peftcore.get_peft_model(
        copy.deepcopy(base), config(peftcore, "prompt_tuning", "llama", num_virtual_tokens=5, **kwargs)
    )
    hf = peft.get_peft_model(
        copy.deepcopy(base), config(peft, "prompt_tuning", "llama", num_virtual_tokens=5, **kwargs)
    )
    expected = base.get_input_embeddings().weight[ids]
    torch.testing.assert_close(pc.prompt_encoder["default"].embedding.weight, expected)
    torch.testing.assert_close(hf.prompt_encoder["default"].embedding.weight, expected)


# -- refusals ---------------------------------------------------------------------------------------
def test_text_init_needs_a_tokenizer_and_a_text() -> None:
    with pytest.raises(ValueError, match="tokenizer_name_or_path can't be None"):
        peftcore.PromptTuningConfig(prompt_tuning_init="TEXT", prompt_tuning_init_text="hello")
    with pytest.raises(ValueError, match="prompt_tuning_init_text can't be None"):
        peftcore.PromptTuningConfig(prompt_tuning_init="TEXT", tokenizer_name_or_path="gpt2")


def test_prompt_fields_on_lora_name_the_owner() -> None:
    with pytest.raises(TypeError, match=r"num_virtual_tokens.*PromptTuningConfig"):
        peftcore.LoraConfig(num_virtual_tokens=4)
    with pytest.raises(TypeError, match=r"'r'.*LoraConfig"):
        peftcore.PromptTuningConfig(r=4)


def test_prefix_tuning_with_gradient_checkpointing_is_refused_before_any_change() -> None:
    model = tiny.build("llama")
    model.gradient_checkpointing_enable()
    before = [(n, p.requires_grad) for n, p in model.named_parameters()]
    with pytest.raises(ValueError, match=r"gradient checkpointing.*gradient_checkpointing_disable"):
        peftcore.get_peft_model(model, config(peftcore, "prefix", "llama"))
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == before
    peft_model = peftcore.get_peft_model(tiny.build("llama"), config(peftcore, "prefix", "llama"))
    with pytest.raises(ValueError, match="gradient checkpointing"):
        peft_model.gradient_checkpointing_enable()


def test_prefix_tuning_on_a_model_without_a_cache_is_refused_before_any_change() -> None:
    model = tiny.build("bert")
    before = [(n, p.requires_grad) for n, p in model.named_parameters()]
    with pytest.raises(ValueError, match=r"does not support past key values.*use prompt tuning or P-tuning"):
        peftcore.get_peft_model(model, config(peftcore, "prefix", "bert"))
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == before


def test_prefix_tuning_wraps_a_model_without_a_forward_of_its_own() -> None:
    # HF PEFT's own tests wrap such stand-ins to check saving and loading: there is no forward to inspect.
    class NoForward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = tiny.build("llama").config
            self.lm_head = torch.nn.Linear(8, 8)

    prefix = config(peftcore, "prefix", "llama")
    wrapped = peftcore.get_peft_model(NoForward(), prefix)
    assert wrapped.peft_config["default"].num_virtual_tokens == prefix.num_virtual_tokens


def test_generate_without_input_ids_names_the_argument() -> None:
    model = peftcore.get_peft_model(tiny.build("llama"), config(peftcore, "prompt_tuning", "llama"))
    with pytest.raises(ValueError, match="needs input_ids"):
        model.generate(inputs_embeds=torch.randn(1, 3, 32), max_new_tokens=2)


def test_merging_a_prompt_is_refused() -> None:
    model = peftcore.get_peft_model(tiny.build("llama"), config(peftcore, "prompt_tuning", "llama"))
    with pytest.raises(ValueError, match="merge_and_unload is not available for prompt learning"):
        model.merge_and_unload()
