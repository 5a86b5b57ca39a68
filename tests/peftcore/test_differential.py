"""Differential tests: peftcore against Hugging Face `peft` (a test-only oracle) on tiny models.

For every tiny architecture and a matrix of LoRA options, both libraries build "the same" adapter on
identical fresh base models; then each adapter is saved by one library and loaded by the other, and
trainable counts, file keys and shapes, outputs, configs and merged weights must agree.

Adapters are created with `init_lora_weights=False` and every trainable tensor is then perturbed
(magnitudes, biases, saved heads too), so no comparison can pass because a tensor is still at its
initial value. Tolerances are atol=1e-6: the same fp32 math on tiny models (hidden size 32).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from torch import nn

import peftcore
from tests import tiny

peft = pytest.importorskip("peft")

ATOL = 1e-6
# peftcore adds the LoRA update with one fused `addmm(result, h, Bᵀ, alpha=scaling)`; HF peft
# computes `result + B(h) * scaling`. With a power-of-two scaling both round identically; otherwise
# the fused form rounds once where peft rounds twice (≈1 ulp per layer), so those cases get 1e-5.
ROUNDING_ATOL = 1e-5

# Module names per architecture: two attention/MLP targets, the input embedding, the layer list's
# name (for layers_pattern), and a module to train in full.
NAMES: dict[str, dict[str, Any]] = {
    "llama": {"q": "q_proj", "v": "v_proj", "emb": "embed_tokens", "layers": "layers", "head": "lm_head"},
    "gpt2": {"q": "c_attn", "v": "c_fc", "emb": "wte", "layers": "h", "head": "lm_head"},
    "opt": {"q": "q_proj", "v": "v_proj", "emb": "embed_tokens", "layers": "layers", "head": "lm_head"},
    "t5": {"q": "q", "v": "v", "emb": "embed_tokens", "layers": "block", "head": "lm_head"},
    # BERT's classifier is added to modules_to_save by the SEQ_CLS task; save the pooler as well.
    "bert": {"q": "query", "v": "value", "emb": "word_embeddings", "layers": "layer", "head": "pooler"},
}

# Option name -> LoraConfig keyword arguments for an architecture (shared by both libraries).
OPTIONS: dict[str, Callable[[str], dict[str, Any]]] = {
    "default": lambda a: {},
    "all_linear": lambda a: {"target_modules": "all-linear"},
    "regex": lambda a: {"target_modules": rf".*\.{NAMES[a]['v']}"},
    "rslora": lambda a: {"use_rslora": True, "r": 4, "lora_alpha": 16},
    "dora": lambda a: {"use_dora": True},
    "bias_lora_only": lambda a: {"bias": "lora_only"},
    "bias_all": lambda a: {"bias": "all"},
    "modules_to_save": lambda a: {"modules_to_save": [NAMES[a]["head"]]},
    "embedding": lambda a: {"target_modules": [NAMES[a]["emb"], NAMES[a]["q"]]},
    "patterns": lambda a: {
        "target_modules": [NAMES[a]["q"], NAMES[a]["v"]],
        "rank_pattern": {NAMES[a]["q"]: 4, rf"{NAMES[a]['layers']}\.0\..*{NAMES[a]['v']}": 2},
        "alpha_pattern": {NAMES[a]["v"]: 32},
    },
    "layers": lambda a: {"layers_to_transform": [1]},
    "layers_pattern": lambda a: {"layers_to_transform": [0], "layers_pattern": NAMES[a]["layers"]},
    "exclude": lambda a: {"target_modules": "all-linear", "exclude_modules": [NAMES[a]["q"]]},
    "dropout": lambda a: {"lora_dropout": 0.1, "r": 2, "lora_alpha": 5},  # scaling 2.5
}
# Options whose scaling is not a power of two (see ROUNDING_ATOL).
INEXACT_SCALING = {"dropout"}

# Keys only HF peft writes, for a deliberate difference: peftcore saves the adapter alone.
# - A targeted `embed_tokens` (one of peft's EMBEDDING_LAYER_NAMES) that is the input embedding:
#   peft also saves its full base weight (`save_embedding_layers="auto"`), for resized vocabularies.
#   (T5's targeted `embed_tokens` are not `get_input_embeddings()`, which is `shared`, so not saved.)
# - bias="all" with a saved head: peft also writes the biases inside the wrapper (original and copy),
#   duplicates of `classifier.bias`.
PEFT_ONLY_KEYS: dict[tuple[str, str], set[str]] = {
    ("bert", "bias_all"): {
        "base_model.model.classifier.original_module.bias",
        "base_model.model.classifier.modules_to_save.bias",
    },
}
# Cases that target an embedding tied to the output layer: merging changes lm_head as well, in both
# libraries alike (peft warns about it), so the merged model no longer computes the adapter's output.
TIED_EMBEDDING_TARGETED = {("gpt2", "embedding"), ("opt", "embedding"), ("t5", "embedding")}

CASES = list(itertools.product(tiny.ARCHS, OPTIONS))
CASE_IDS = [f"{a}-{o}" for a, o in CASES]


def lora_kwargs(arch: str, option: str) -> dict[str, Any]:
    return {"task_type": tiny.TASK[arch], "init_lora_weights": False, **OPTIONS[option](arch)}


def perturb(model: nn.Module, seed: int) -> None:
    """Move every trainable tensor away from its initial value (B, magnitudes, biases, head copies)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def atol_for(option: str) -> float:
    return ROUNDING_ATOL if option in INEXACT_SCALING else ATOL


def logits(model: nn.Module, arch: str) -> torch.Tensor:
    model.eval()  # dropout off: lora_dropout > 0 must not change eval outputs
    return tiny.output(model, tiny.inputs(arch))


def file_shapes(directory: str | Path) -> dict[str, tuple[int, ...]]:
    with safe_open(os.path.join(directory, "adapter_model.safetensors"), "pt") as fh:
        return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    # Tiny matmuls: thread hand-off costs more than the math (10x slower on a busy 2-core runner).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclasses.dataclass
class Case:
    """One arch × option: a pristine base, and each library's perturbed adapter saved to disk."""

    arch: str
    option: str
    base: nn.Module
    pc_model: Any
    hf_model: Any
    pc_dir: Path
    hf_dir: Path
    pc_logits: torch.Tensor
    hf_logits: torch.Tensor

    def fresh(self) -> nn.Module:
        return copy.deepcopy(self.base)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Case]:
    cache: dict[tuple[str, str], Case] = {}

    def get(arch: str, option: str) -> Case:
        if (arch, option) not in cache:
            root = tmp_path_factory.mktemp(f"{arch}-{option}")
            base = tiny.build(arch)
            kw = lora_kwargs(arch, option)
            with warnings.catch_warnings():
                # peft warns about tied layers and that it saves targeted embeddings' base weights.
                warnings.simplefilter("ignore")
                pc_model = peftcore.get_peft_model(copy.deepcopy(base), peftcore.LoraConfig(**kw))
                hf_model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**kw))
                perturb(pc_model, 1)
                perturb(hf_model, 2)
                pc_model.save_pretrained(root / "pc")
                hf_model.save_pretrained(root / "hf")
            cache[arch, option] = Case(
                arch, option, base, pc_model, hf_model, root / "pc", root / "hf",
                logits(pc_model, arch), logits(hf_model, arch),
            )  # fmt: skip
        return cache[arch, option]

    return get


def hf_load(case: Case, directory: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(case.fresh(), directory)


def pc_load(case: Case, directory: Path) -> Any:
    return peftcore.PeftModel.from_pretrained(case.fresh(), directory)


# -- per arch × option --------------------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "option"), CASES, ids=CASE_IDS)
def test_trainable_counts_match(cases: Callable[[str, str], Case], arch: str, option: str) -> None:
    case = cases(arch, option)
    assert case.pc_model.get_nb_trainable_parameters() == case.hf_model.get_nb_trainable_parameters()


@pytest.mark.parametrize(("arch", "option"), CASES, ids=CASE_IDS)
def test_saved_keys_and_shapes_match(cases: Callable[[str, str], Case], arch: str, option: str) -> None:
    case = cases(arch, option)
    pc_shapes, hf_shapes = file_shapes(case.pc_dir), file_shapes(case.hf_dir)
    assert hf_shapes.keys() - pc_shapes.keys() == PEFT_ONLY_KEYS.get((arch, option), set())
    assert pc_shapes == {k: v for k, v in hf_shapes.items() if k in pc_shapes}


@pytest.mark.parametrize(("arch", "option"), CASES, ids=CASE_IDS)
def test_peftcore_adapter_gives_same_outputs_in_peft(
    cases: Callable[[str, str], Case], arch: str, option: str
) -> None:
    case = cases(arch, option)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = peft.PeftModel.from_pretrained(case.fresh(), case.pc_dir)
    # peft loads peftcore's files silently, except for its own note on tied embeddings / heads, which
    # it gives for its own adapters too (these cases adapt or save a layer tied to the embedding).
    from_peft = {str(w.message) for w in caught if f"{os.sep}peft{os.sep}" in w.filename}
    assert all(m.startswith("Model has `tie_word_embeddings=True`") for m in from_peft), from_peft
    # Not the base model's output: the perturbed adapter changes the logits.
    assert not torch.allclose(case.pc_logits, logits(case.fresh(), arch), atol=1e-3)
    torch.testing.assert_close(logits(loaded, arch), case.pc_logits, atol=atol_for(option), rtol=0)


@pytest.mark.parametrize(("arch", "option"), CASES, ids=CASE_IDS)
def test_peft_adapter_gives_same_outputs_in_peftcore(
    cases: Callable[[str, str], Case], arch: str, option: str
) -> None:
    case = cases(arch, option)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = pc_load(case, case.hf_dir)
    # Every tensor peft writes is loaded or a known duplicate: nothing is reported as ignored. The only
    # note is the one peft gives too, on adapting a layer tied to the embedding.
    messages = {str(w.message) for w in caught}
    assert all(m.startswith("Model has `tie_word_embeddings=True`") for m in messages), messages
    assert not torch.allclose(case.hf_logits, logits(case.fresh(), arch), atol=1e-3)
    torch.testing.assert_close(logits(loaded, arch), case.hf_logits, atol=atol_for(option), rtol=0)


@pytest.mark.parametrize(("arch", "option"), CASES, ids=CASE_IDS)
def test_merge_and_unload_gives_same_weights(
    cases: Callable[[str, str], Case], arch: str, option: str
) -> None:
    case = cases(arch, option)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both say when a trained head copy unties the embeddings
        pc_merged = pc_load(case, case.hf_dir).merge_and_unload()
        hf_merged = hf_load(case, case.hf_dir).merge_and_unload()
    assert type(pc_merged) is type(case.base)
    # A merged trained copy of a tied lm_head is untied, and both record it in the config.
    tied = [getattr(m.config, "tie_word_embeddings", None) for m in (pc_merged, hf_merged)]
    assert tied[0] == tied[1]
    pc_state, hf_state = pc_merged.state_dict(), hf_merged.state_dict()
    assert pc_state.keys() == hf_state.keys()
    for key in pc_state:
        torch.testing.assert_close(pc_state[key], hf_state[key], atol=ATOL, rtol=0, msg=key)
    merged_logits = logits(pc_merged, arch)
    if (arch, option) in TIED_EMBEDDING_TARGETED:
        torch.testing.assert_close(merged_logits, logits(hf_merged, arch), atol=ATOL, rtol=0)
    else:
        # Merged vs unmerged: a different summation order, hence 1e-5.
        torch.testing.assert_close(merged_logits, case.hf_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("arch", "option"), CASES, ids=CASE_IDS)
def test_configs_load_in_the_other_library(cases: Callable[[str, str], Case], arch: str, option: str) -> None:
    case = cases(arch, option)
    hf_config = peft.PeftConfig.from_pretrained(case.pc_dir)
    assert isinstance(hf_config, peft.LoraConfig)
    with warnings.catch_warnings():
        # Every key peft 0.21.2 writes is either a peftcore field or a known inactive feature flag.
        warnings.simplefilter("error")
        pc_config = peftcore.PeftConfig.from_pretrained(case.hf_dir)
    assert isinstance(pc_config, peftcore.LoraConfig)
    fields = ("r", "lora_alpha", "use_rslora", "use_dora", "bias", "rank_pattern", "alpha_pattern")
    for field in (*fields, "fan_in_fan_out", "layers_to_transform", "layers_pattern"):
        assert getattr(pc_config, field) == getattr(hf_config, field), field
    # Both write the targets as resolved (defaults and "all-linear" expanded) or as the regex given.
    pc_targets, hf_targets = case.pc_model.peft_config["default"].target_modules, hf_config.target_modules
    assert (pc_targets if isinstance(pc_targets, str) else set(pc_targets)) == (
        hf_targets if isinstance(hf_targets, str) else set(hf_targets)
    )
    assert set(case.pc_model.peft_config["default"].modules_to_save or []) == set(
        case.hf_model.peft_config["default"].modules_to_save or []
    )


# -- multiple adapters --------------------------------------------------------------------------------
def two_adapter_outputs(model: Any, arch: str) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        out[name] = logits(model, arch)
    return out


def add_two_adapters(lib: Any, arch: str) -> Any:
    """`default` (plain LoRA) plus `other` (rsLoRA, rank 4), each perturbed while it is active."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPT-2: both switch fan_in_fan_out on for Conv1D and say so
        model = lib.get_peft_model(tiny.build(arch), lib.LoraConfig(**lora_kwargs(arch, "default")))
        model.add_adapter("other", lib.LoraConfig(**lora_kwargs(arch, "rslora")))
    for seed, name in enumerate(("default", "other")):
        model.set_adapter(name)  # only the active adapter (and its head copy) requires grad
        perturb(model, seed)
    return model


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_two_adapters_round_trip_peftcore_to_peft(arch: str, tmp_path: Path) -> None:
    pc = add_two_adapters(peftcore, arch)
    pc.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert (tmp_path / "other" / "adapter_model.safetensors").is_file()
    expected = two_adapter_outputs(pc, arch)
    assert not torch.allclose(expected["default"], expected["other"], atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.PeftModel.from_pretrained(tiny.build(arch), tmp_path)
        hf.load_adapter(tmp_path, adapter_name="other", subfolder="other")
    for name, out in two_adapter_outputs(hf, arch).items():
        torch.testing.assert_close(out, expected[name], atol=ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_two_adapters_round_trip_peft_to_peftcore(arch: str, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = add_two_adapters(peft, arch)
        hf.save_pretrained(tmp_path)
    assert (tmp_path / "other" / "adapter_model.safetensors").is_file()
    expected = two_adapter_outputs(hf, arch)
    pc = peftcore.PeftModel.from_pretrained(tiny.build(arch), tmp_path)
    pc.load_adapter(tmp_path, adapter_name="other", subfolder="other")
    for name, out in two_adapter_outputs(pc, arch).items():
        torch.testing.assert_close(out, expected[name], atol=ATOL, rtol=0, msg=name)


# -- AutoPeftModel with a base model saved to a local directory ---------------------------------------
AUTO = {
    "CAUSAL_LM": ("AutoModelForCausalLM", "AutoPeftModelForCausalLM"),
    "SEQ_2_SEQ_LM": ("AutoModelForSeq2SeqLM", "AutoPeftModelForSeq2SeqLM"),
    "SEQ_CLS": ("AutoModelForSequenceClassification", "AutoPeftModelForSequenceClassification"),
}


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_auto_peft_model_loads_the_other_librarys_adapter(arch: str, tmp_path: Path) -> None:
    import transformers

    auto_model, auto_peft = AUTO[tiny.TASK[arch]]
    tiny.build(arch).save_pretrained(tmp_path / "base")
    kw = lora_kwargs(arch, "modules_to_save")
    outputs = {}
    for lib in (peft, peftcore):
        # Loaded from the directory, so the base's name_or_path (and the adapter config) is that path.
        base = getattr(transformers, auto_model).from_pretrained(tmp_path / "base")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = lib.get_peft_model(base, lib.LoraConfig(**kw))
        perturb(model, 3)
        model.save_pretrained(tmp_path / lib.__name__)
        outputs[lib.__name__] = logits(model, arch)
        config = json.loads((tmp_path / lib.__name__ / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(tmp_path / "base")
    pc_loaded = getattr(peftcore, auto_peft).from_pretrained(tmp_path / "peft")
    torch.testing.assert_close(logits(pc_loaded, arch), outputs["peft"], atol=ATOL, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_loaded = getattr(peft, auto_peft).from_pretrained(tmp_path / "peftcore")
    torch.testing.assert_close(logits(hf_loaded, arch), outputs["peftcore"], atol=ATOL, rtol=0)


# -- precise tests of deliberate differences and of peft-only file content ----------------------------
def test_peft_embedding_base_weight_in_the_file_is_loaded(tmp_path: Path) -> None:
    """peft saves a targeted `embed_tokens`' full base weight (for resized vocabularies); peftcore
    loads it into the base layer as peft does, instead of silently keeping the fresh base's rows."""
    base = tiny.build("llama")
    trained_base = copy.deepcopy(base)
    with torch.no_grad():  # stands in for a vocabulary resized or edited before training
        trained_base.model.embed_tokens.weight.add_(0.5)
    kw = lora_kwargs("llama", "embedding")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.get_peft_model(trained_base, peft.LoraConfig(**kw))
        perturb(hf, 4)
        hf.save_pretrained(tmp_path)
    assert "base_model.model.model.embed_tokens.base_layer.weight" in file_shapes(tmp_path)
    pc = peftcore.PeftModel.from_pretrained(base, tmp_path)
    torch.testing.assert_close(logits(pc, "llama"), logits(hf, "llama"), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("alpha", "atol"), [(16, ATOL), (5, ROUNDING_ATOL)], ids=["scaling2", "scaling0.625"]
)
def test_lora_linear_matches_peft_up_to_fused_add_rounding(alpha: int, atol: float) -> None:
    """The one numeric difference: peftcore's fused `addmm` vs peft's multiply-then-add (ROUNDING_ATOL)."""
    base = nn.Sequential(nn.Linear(32, 48))
    kw = {"target_modules": ["0"], "r": 8, "lora_alpha": alpha, "init_lora_weights": False}
    pc = peftcore.get_peft_model(copy.deepcopy(base), peftcore.LoraConfig(**kw))
    hf = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**kw))
    with torch.no_grad():
        for ab in ("lora_A", "lora_B"):
            getattr(hf.base_model.model[0], ab)["default"].weight.copy_(
                getattr(pc.base_model.model[0], ab)["default"].weight
            )
    x = torch.randn(4, 7, 32) * 10
    with torch.no_grad():
        pc_out, hf_out = pc(x), hf(x)
        assert not torch.allclose(pc_out, base(x), atol=1e-3)
    torch.testing.assert_close(pc_out, hf_out, atol=atol, rtol=0)


def test_modules_to_save_matching_needs_a_dot_boundary_unlike_peft(tmp_path: Path) -> None:
    """peft matches modules_to_save with a plain `endswith` ("head" wraps `lm_head`); peftcore needs a
    name or dotted suffix. Real heads (`lm_head`, `classifier`, `score`, `qa_outputs`, `pooler`) match
    the same way in both (see the modules_to_save cases above); a bare suffix does not. The peft file's
    `lm_head.weight` still names a tensor of the model exactly, so, as peft's own loader does with such
    keys, peftcore loads it there: the outputs are peft's."""
    kw = {**lora_kwargs("llama", "default"), "modules_to_save": ["head"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.get_peft_model(tiny.build("llama"), peft.LoraConfig(**kw))
        perturb(hf, seed=5)
        hf.save_pretrained(tmp_path)
    assert "base_model.model.lm_head.weight" in file_shapes(tmp_path)
    pc = peftcore.get_peft_model(tiny.build("llama"), peftcore.LoraConfig(**kw))
    assert not [n for n, _ in pc.named_modules() if n.endswith("modules_to_save")]
    loaded = peftcore.PeftModel.from_pretrained(tiny.build("llama"), tmp_path)
    batch = tiny.inputs("llama")
    torch.testing.assert_close(tiny.output(loaded, batch), tiny.output(hf.eval(), batch), atol=1e-6, rtol=0)


def test_target_that_is_also_a_saved_head_is_skipped_like_peft(tmp_path: Path) -> None:
    """A target that is also in modules_to_save (here BERT's auto-added `classifier`) is trained in
    full, not adapted, in both libraries; peftcore says so with a warning and loads peft's file."""
    kw = {**lora_kwargs("bert", "default"), "target_modules": ["query", "value", "classifier"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.get_peft_model(tiny.build("bert"), peft.LoraConfig(**kw))
        perturb(hf, seed=3)
        hf.save_pretrained(tmp_path)
    assert "base_model.model.classifier.lora_A.weight" not in file_shapes(tmp_path)
    with pytest.warns(UserWarning, match="'classifier' matches target_modules but is in modules_to_save"):
        pc = peftcore.PeftModel.from_pretrained(tiny.build("bert"), tmp_path)
    batch = tiny.inputs("bert")
    torch.testing.assert_close(tiny.output(pc, batch), tiny.output(hf.eval(), batch), atol=1e-6, rtol=0)


def test_peftcore_writes_only_peftcore_fields_and_peft_adds_its_own(
    cases: Callable[[str, str], Case],
) -> None:
    """peftcore's adapter_config.json holds its own fields only (peft fills the rest with defaults);
    every extra key peft writes is either a peftcore field or a known feature flag in its off state."""
    case = cases("llama", "default")
    pc_keys = set(json.loads((case.pc_dir / "adapter_config.json").read_text()))
    hf_keys = set(json.loads((case.hf_dir / "adapter_config.json").read_text()))
    assert pc_keys == {f.name for f in dataclasses.fields(peftcore.LoraConfig)}
    assert pc_keys < hf_keys
    lora = peftcore.LoraConfig
    assert hf_keys - pc_keys <= set(lora.NEUTRAL_FOREIGN_FIELDS) | set(lora.INERT_FOREIGN_FIELDS)


@pytest.mark.parametrize(
    ("arch", "model_class", "task"),
    [
        ("gpt2", "GPT2ForSequenceClassification", "SEQ_CLS"),
        ("llama", "LlamaForSequenceClassification", "SEQ_CLS"),
        ("bert", "BertForTokenClassification", "TOKEN_CLS"),
        ("bert", "BertForQuestionAnswering", "QUESTION_ANS"),
        ("opt", "OPTForQuestionAnswering", "QUESTION_ANS"),
    ],
)
def test_task_heads_are_saved_the_same_way(arch: str, model_class: str, task: str) -> None:
    """The heads each task adds to modules_to_save (`score`, `classifier`, `qa_outputs`) are wrapped
    identically despite peft's plain-`endswith` matching vs peftcore's dotted-suffix matching."""
    import transformers

    torch.manual_seed(0)
    base = getattr(transformers, model_class)(tiny.build(arch).config).eval()
    kw = {"task_type": task, "init_lora_weights": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = [lib.get_peft_model(copy.deepcopy(base), lib.LoraConfig(**kw)) for lib in (peftcore, peft)]
    wrapped = [{n for n, _ in m.named_modules() if n.endswith(".modules_to_save")} for m in models]
    assert wrapped[0] == wrapped[1]
    assert len(wrapped[0]) == 1
    assert models[0].get_nb_trainable_parameters() == models[1].get_nb_trainable_parameters()
