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

# Module names per architecture: default targets' first entry, an embedding, a layer-list name,
# a head to train in full, and every layer that has a bias the adapter may train.
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
    ("llama", "embedding"): {"base_model.model.model.embed_tokens.base_layer.weight"},
    ("opt", "embedding"): {"base_model.model.model.decoder.embed_tokens.base_layer.weight"},
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


def file_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    with safe_open(os.path.join(directory, "adapter_model.safetensors"), "pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118


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
                warnings.simplefilter("ignore")  # peft warns about tied layers and dropout on embeddings
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


def hf_load(case: Case, directory: Path, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(case.fresh(), directory, **kw)


def pc_load(case: Case, directory: Path, **kw: Any) -> Any:
    return peftcore.PeftModel.from_pretrained(case.fresh(), directory, **kw)


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
    loaded = hf_load(case, case.pc_dir)
    # Not the base model's output: the perturbed adapter changes the logits.
    assert not torch.allclose(case.pc_logits, logits(case.fresh(), arch), atol=1e-3)
    torch.testing.assert_close(logits(loaded, arch), case.pc_logits, atol=atol_for(option), rtol=0)


@pytest.mark.parametrize(("arch", "option"), CASES, ids=CASE_IDS)
def test_peft_adapter_gives_same_outputs_in_peftcore(
    cases: Callable[[str, str], Case], arch: str, option: str
) -> None:
    case = cases(arch, option)
    with warnings.catch_warnings():
        # Every tensor peft writes is loaded or a known duplicate: nothing is reported as ignored.
        warnings.simplefilter("error")
        loaded = pc_load(case, case.hf_dir)
    assert not torch.allclose(case.hf_logits, logits(case.fresh(), arch), atol=1e-3)
    torch.testing.assert_close(logits(loaded, arch), case.hf_logits, atol=atol_for(option), rtol=0)


@pytest.mark.parametrize(("arch", "option"), CASES, ids=CASE_IDS)
def test_merge_and_unload_gives_same_weights(cases: Callable[[str, str], Case], arch: str, option: str) -> None:
    case = cases(arch, option)
    pc_merged = pc_load(case, case.hf_dir).merge_and_unload()
    hf_merged = hf_load(case, case.hf_dir).merge_and_unload()
    assert type(pc_merged) is type(case.base)
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
    for field in ("r", "lora_alpha", "use_rslora", "use_dora", "bias", "rank_pattern", "alpha_pattern"):
        assert getattr(pc_config, field) == getattr(hf_config, field), field
    assert set(case.pc_model.peft_config["default"].modules_to_save or []) == set(
        case.hf_model.peft_config["default"].modules_to_save or []
    )
