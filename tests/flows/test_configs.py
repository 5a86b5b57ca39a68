"""Every recipe in configs/ runs: the `finetune` flow of a real run, offline, on stand-ins.

A recipe names a Hub model and a Hub dataset (the quickstart: the bundled model and files in this
repository). Here the dataset becomes a small `DatasetDict` saved with `save_to_disk` with the real
one's splits, columns and features, and the model a tiny one of the same family built from a config,
with a tokenizer that behaves like the real one where the pipeline can tell: OPT's leading `</s>`,
Qwen's default system turn, class names that are single mT5 pieces. Only where the data and the model
come from and the size of the run are overridden; the recipe's format, template, truncation policy,
packing, LoRA targets, splits and metrics are what runs. The recipes are found by a glob, so a new one
without a stand-in fails here.

| recipe's dataset (see each recipe's header)           | stand-in columns and splits                  |
|-------------------------------------------------------|----------------------------------------------|
| takala/financial_phrasebank (parquet export)          | sentence, label (ClassLabel); train          |
| tatsu-lab/alpaca                                      | instruction, input ("" in half the rows),    |
|                                                       | output, text; train                          |
| HuggingFaceH4/no_robots                               | prompt, prompt_id, messages [{content, role}] |
|                                                       | (some multi-turn with a system turn),        |
|                                                       | category; train, test                        |
| ethz/food101                                          | image (Image), label (ClassLabel); train,    |
|                                                       | validation                                   |
| scene_parse_150 (parquet export)                      | image, annotation (Images), scene_category;  |
|                                                       | train, validation, test (unannotated)        |
| openslr/librispeech_asr (clean)                       | audio (Audio), text, speaker_id, chapter_id, |
|                                                       | id; train.100, validation, test              |

The image and speech stand-ins are generated so that they can be learned (see tests/flows/media.py):
the class is the colour, the mask the square, each word a tone; the audio is at 8 kHz, so the run
resamples it to the feature extractor's 16 kHz.

Each stand-in has one row over its recipe's max_length, which the recipe's policy must count.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value, load_from_disk

from flows.finetune import finetune
from flows.params import BUNDLED_MINILM, FinetuneParams
from flows.steps import data as data_step
from flows.steps.data.media import load_mask
from flows.steps.data.media_encode import MediaCollator
from flows.steps.data.validate import needed_columns
from flows.steps.model import load_processor, load_tokenizer
from tests.flows import fixtures, media

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO_ROOT / "configs").glob("*.yaml"))
CLASS_NAMES = ["negative", "neutral", "positive"]
# Metrics that log several values (rouge: one per variant); any other logs under its own name.
METRIC_KEYS = {"rouge": ("rouge1", "rouge2", "rougeL", "rougeLsum")}
PIRATE = "You are a cheerful pirate."


# -- stand-in datasets -----------------------------------------------------------------------------
SENTENCES = [
    ("operating profit rose to eur 13 million", 2),
    ("net sales fell by 5 percent", 0),
    ("the company is based in helsinki", 1),
    ("the board proposes a higher dividend", 2),
    ("the plant will be closed and 90 jobs cut", 0),
    ("the shares are listed on the main market", 1),
    ("orders grew strongly in the third quarter", 2),
    ("the loss widened from the previous year", 0),
    ("the agreement was signed in march", 1),
]


def phrasebank() -> DatasetDict:
    """Financial PhraseBank (sentences_allagree, as the recipe reads it): `sentence` and a ClassLabel
    `label`; one train split. One sentence is over max_length (128)."""
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=CLASS_NAMES)})
    rows = [*SENTENCES, *SENTENCES[::-1], *SENTENCES]
    rows.append((" ".join(["profit"] * 140), 2))  # 140 tokens: cut by truncation=right
    split = Dataset.from_dict(
        {"sentence": [t for t, _ in rows], "label": [label for _, label in rows]}, features=features
    )
    return DatasetDict({"train": split})


def alpaca() -> DatasetDict:
    """Alpaca: instruction / input / output / text, one train split; `input` is "" in half the rows.
    One row is over max_length (512 byte-level tokens)."""
    rows = []
    for i in range(110):
        a, b = i % 7 + 1, i % 5 + 2
        if i % 2:
            rows.append(
                {
                    "instruction": "Add the two numbers.",
                    "input": f"{a} and {b}",
                    "output": f"{a + b} (case {i})",
                }
            )
        else:
            rows.append(
                {"instruction": f"Name colour number {i}.", "input": "", "output": f"Colour {i} is blue."}
            )
    rows.append({"instruction": "Tell a long story.", "input": "", "output": "Once upon a time. " * 40})
    for row in rows:
        row["text"] = f"{row['instruction']}\n{row['input']}\n{row['output']}"
    features = Features({name: Value("string") for name in ("instruction", "input", "output", "text")})
    return DatasetDict({"train": Dataset.from_list(rows, features=features)})


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"content": content, "role": role} for role, content in pairs]


def no_robots() -> DatasetDict:
    """No Robots: prompt / prompt_id / messages / category, train and test; single-turn rows and
    multi-turn Chat rows with a system turn. One conversation is over max_length (2048 tokens)."""

    def row(messages: list[dict[str, str]], category: str) -> dict[str, Any]:
        prompt = next(m["content"] for m in messages if m["role"] == "user")
        return {
            "prompt": prompt,
            "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
            "messages": messages,
            "category": category,
        }

    def single(i: int) -> dict[str, Any]:
        return row(_turns(("user", f"What is {i} plus {i}?"), ("assistant", f"It is {2 * i}.")), "Open QA")

    def chat(i: int) -> dict[str, Any]:
        conversation = _turns(
            ("system", PIRATE),
            ("user", f"Where is treasure number {i}?"),
            ("assistant", f"Under palm tree {i}, matey."),
            ("user", "And how deep?"),
            ("assistant", f"{i + 2} feet, arr."),
        )
        return row(conversation, "Chat")

    train = [single(i) if i % 3 else chat(i) for i in range(24)]
    train.append(row(_turns(("user", "Tell me more. " * 200), ("assistant", "No.")), "Chat"))
    features = Features(
        {
            "prompt": Value("string"),
            "prompt_id": Value("string"),
            "messages": List({"content": Value("string"), "role": Value("string")}),
            "category": Value("string"),
        }
    )
    test = [single(50), chat(51), single(52), chat(53)]
    return DatasetDict(
        {
            "train": Dataset.from_list(train, features=features),
            "test": Dataset.from_list(test, features=features),
        }
    )


@dataclass(frozen=True)
class StandIn:
    build: Callable[[], DatasetDict]
    truncated: int  # rows the recipe's truncation policy cuts...
    dropped: int  # ...and drops, over all splits


DATASETS = {
    "takala/financial_phrasebank": StandIn(phrasebank, truncated=1, dropped=0),
    "tatsu-lab/alpaca": StandIn(alpaca, truncated=0, dropped=1),
    "HuggingFaceH4/no_robots": StandIn(no_robots, truncated=0, dropped=1),
    "ethz/food101": StandIn(media.food101, truncated=0, dropped=0),
    "scene_parse_150": StandIn(media.scene_parse, truncated=0, dropped=0),
    "openslr/librispeech_asr": StandIn(media.librispeech, truncated=0, dropped=0),
}
# Hub image / speech model → a builder of a tiny model of the family with its processor.
MEDIA_MODELS: dict[str, Callable[[Path], str]] = {
    "google/vit-base-patch16-224-in21k": media.vit_dir,
    "nvidia/mit-b0": media.segformer_dir,
    "openai/whisper-small": media.whisper_dir,
}
# Hub model → (tiny model family, a tokenizer behaving like the model's).
MODELS: dict[str, tuple[str, Callable[[], Any]]] = {
    "bigscience/mt0-large": (
        "mt5",
        lambda: fixtures.mt5_tokenizer([w for s, _ in SENTENCES for w in s.split()] + CLASS_NAMES),
    ),
    "facebook/opt-350m": ("opt", fixtures.opt_tokenizer),
    "Qwen/Qwen2.5-0.5B-Instruct": (
        "qwen2",
        lambda: fixtures.chat_tokenizer(fixtures.QWEN_STYLE_CHAT_TEMPLATE),
    ),
}


def _raw(recipe: Path) -> dict[str, Any]:
    return yaml.safe_load(recipe.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """{Hub id: local directory} for every stand-in model and dataset (runs only read them)."""
    root = tmp_path_factory.mktemp("stand-ins")
    out = {}
    for hub_id, (family, tokenizer) in MODELS.items():
        out[hub_id] = fixtures.family_model_dir(root, family, tokenizer())
    for hub_id, build in MEDIA_MODELS.items():
        folder = root / hub_id.replace("/", "--")
        folder.mkdir()
        out[hub_id] = build(folder)
    for hub_id, stand_in in DATASETS.items():
        out[hub_id] = str(root / hub_id.replace("/", "--"))
        stand_in.build().save_to_disk(out[hub_id])
    return out


def offline_params(recipe: Path, root: Path, stand_ins: dict[str, str]) -> FinetuneParams:
    """The recipe with its model and data from `stand_ins` (or repository paths made absolute) and a
    two-step run under `root`; nothing else changed."""
    raw = _raw(recipe)
    data = raw["data"]
    overrides = [
        f"output_dir={root / 'out'}",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.eval_batch_size=4",
        "train.logging_steps=1",
        "eval.max_new_tokens=4",
    ]
    if raw.get("train", {}).get("eval_every") == "steps":
        overrides.append("train.eval_steps=1")  # evaluations on the validation split within 2 steps
    if raw["model"]["name_or_path"] in MODELS or raw["model"]["name_or_path"] in MEDIA_MODELS:
        overrides.append(f"model.name_or_path={stand_ins[raw['model']['name_or_path']]}")
    if data.get("dataset") in DATASETS:
        overrides += [
            f"data.dataset={stand_ins[data['dataset']]}",
            "data.config_name=",
            "data.revision=",
            "data.data_dir=",
        ]
    for field in ("train_file", "validation_file", "test_file"):
        if data.get(field):
            overrides.append(f"data.{field}={REPO_ROOT / data[field]}")
    return FinetuneParams.from_yaml(recipe, overrides)


# -- every recipe parses and has a stand-in ----------------------------------------------------------
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_every_hub_input_has_a_stand_in(recipe: Path) -> None:
    params = FinetuneParams.from_yaml(recipe)
    header = recipe.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("# "), f"{recipe.name}: start with a comment saying what the recipe is"
    model, dataset = params.model.name_or_path, params.data.dataset
    if model != BUNDLED_MINILM:
        assert model in MODELS or model in MEDIA_MODELS, f"{recipe.name}: add a tiny stand-in of {model!r}"
    if dataset is not None:
        assert dataset in DATASETS, f"{recipe.name}: add a stand-in of {dataset!r} to DATASETS"
        # The recipe reads columns the real dataset has (the stand-in has the real columns).
        columns = set(DATASETS[dataset].build()[params.data.train_split].column_names)
        assert {c for _, c in needed_columns(params)} <= columns
    if model in MODELS or model in MEDIA_MODELS or dataset is not None:
        text = recipe.read_text(encoding="utf-8")
        assert "Needs the Hub" in text and "GPU" in text, f"{recipe.name}: say it needs the Hub / a GPU"


def test_the_stand_ins_keep_the_features_the_recipes_depend_on() -> None:
    label = phrasebank()["train"].features["label"]
    assert isinstance(label, ClassLabel) and label.names == CLASS_NAMES
    inputs = alpaca()["train"]["input"]
    assert "" in inputs and any(inputs)
    conversations = no_robots()["test"]["messages"]
    assert any(c[0]["role"] == "system" and len(c) > 3 for c in conversations)
    assert any(c[0]["role"] == "user" for c in conversations)


# -- every recipe runs ----------------------------------------------------------------------------------
def _expected_metrics(names: list[str]) -> set[str]:
    return {key for name in names for key in METRIC_KEYS.get(name, (name,))}


def _predictions(client: Any, run_id: str, dest: Path) -> list[dict[str, str]]:
    dest.mkdir(parents=True, exist_ok=True)
    table = json.loads(
        Path(client.download_artifacts(run_id, "eval_predictions.json", str(dest))).read_text()
    )
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def _spans(ids: list[int], labels: list[int]) -> tuple[list[list[int]], list[int]]:
    """(runs of trained tokens, every untrained token) of one tokenized example."""
    spans: list[list[int]] = []
    untrained: list[int] = []
    previous = -100
    for token, label in zip(ids, labels):
        if label == -100:
            untrained.append(token)
        elif previous == -100:
            spans.append([token])
        else:
            spans[-1].append(token)
        previous = label
    return spans, untrained


def _check_phrasebank(params: FinetuneParams, splits: Any, table: list[dict[str, str]]) -> None:
    # ClassLabel targets are learned and scored as their names, not as ids.
    by_sentence = {sentence: CLASS_NAMES[label] for sentence, label in SENTENCES}
    names = [by_sentence[prompt] for prompt in splits["test"]["prompt"]]
    assert splits["test"]["reference"] == names and names
    assert [row["reference"] for row in table] == names
    tok = load_tokenizer(params)
    assert {tok.decode(labels, skip_special_tokens=True) for labels in splits["train"]["labels"]} == set(
        CLASS_NAMES
    )


def _alpaca_prompt(row: dict[str, str]) -> str:
    extra = f"### Input:\n{row['input']}\n\n" if row["input"] else ""
    return f"### Instruction:\n{row['instruction']}\n\n{extra}### Response:\n"


def _check_alpaca(params: FinetuneParams, splits: Any, table: list[dict[str, str]]) -> None:
    by_output = {row["output"]: row for row in alpaca()["train"]}
    tok = load_tokenizer(params)
    kinds = set()
    # Training rows: the loss counts the response and its eos only; the prompt shows the Input
    # section exactly when the row has an input.
    for ids, labels in zip(splits["train"]["input_ids"], splits["train"]["labels"]):
        (target,), prompt = _spans(ids, labels)
        output = tok.decode(target).removesuffix("</s>")
        assert tok.decode(target).endswith("</s>") and ids[0] == tok.bos_token_id
        assert tok.decode(prompt, skip_special_tokens=True) == _alpaca_prompt(by_output[output])
        kinds.add(bool(by_output[output]["input"]))
    assert kinds == {True, False}
    for row in table:
        assert row["input"] == _alpaca_prompt(by_output[row["reference"]])


def _check_no_robots(params: FinetuneParams, splits: Any, table: list[dict[str, str]]) -> None:
    test = no_robots()["test"]["messages"]
    # Generation starts from the conversation before the last answer, rendered by the model's template
    # (its default system turn when there is none), and is scored against that answer.
    assert [row["reference"] for row in table] == [c[-1]["content"] for c in test]
    for row, conversation in zip(table, test):
        assert row["input"].startswith("<|im_start|>system\n")
        assert row["input"].endswith(
            "<|im_start|>user\n" + conversation[-2]["content"] + "<|im_end|>\n<|im_start|>assistant\n"
        )
        assert (PIRATE in row["input"]) == (conversation[0]["role"] == "system")
    # Training rows: the loss counts every assistant turn (and its end-of-turn), nothing else.
    tok = load_tokenizer(params)
    answers = {
        tuple(m["content"] for m in c if m["role"] == "assistant") for c in no_robots()["train"]["messages"]
    }
    multi_turn = 0
    for ids, labels in zip(splits["train"]["input_ids"], splits["train"]["labels"]):
        spans, _ = _spans(ids, labels)
        decoded = [tok.decode(span) for span in spans]
        assert all(text.endswith("<|im_end|>") for text in decoded)
        assert tuple(text.removesuffix("<|im_end|>") for text in decoded) in answers
        multi_turn += len(spans) > 1
    assert multi_turn > 0


def _check_quickstart(params: FinetuneParams, splits: Any, table: list[dict[str, str]]) -> None:
    assert {row["reference"] for row in table} <= set(params.data.label_names or [])


def _check_food101(params: FinetuneParams, splits: Any, table: list[dict[str, str]]) -> None:
    # The label map is the ClassLabel's names; the test split is Food-101's validation split.
    assert len(table) == len(splits["test"]) == 6
    assert {row["reference"] for row in table} == set(media.FOODS)
    assert all(row["prediction"] in media.FOODS for row in table)


def _check_scene_parse(params: FinetuneParams, splits: Any, table: list[dict[str, str]]) -> None:
    # reduce_labels: the file's 1 (wall) and 3 (sky) are classes 0 and 2, its 0 is ignored (255).
    labels = load_mask({"bytes": splits["train"][0]["mask_bytes"]}, None)
    assert set(np.unique(labels).tolist()) == {0, 2, 255}
    assert all(row["reference"] == "wall sky" for row in table)


def _check_librispeech(params: FinetuneParams, splits: Any, table: list[dict[str, str]]) -> None:
    assert [row["reference"] for row in table] == media.librispeech()["test"]["text"]
    # 8 kHz clips resampled to 16 kHz by the run's collator: 1 s windows of 100 log-mel frames.
    collate = MediaCollator("asr", load_processor(params))
    assert tuple(collate([splits["train"][0]])["input_features"].shape) == (1, 8, 100)


CHECKS = {
    "ethz/food101": _check_food101,
    "scene_parse_150": _check_scene_parse,
    "openslr/librispeech_asr": _check_librispeech,
    "takala/financial_phrasebank": _check_phrasebank,
    "tatsu-lab/alpaca": _check_alpaca,
    "HuggingFaceH4/no_robots": _check_no_robots,
    None: _check_quickstart,
}


def _expected_cuts(recipe: Path, params: FinetuneParams) -> tuple[int, int]:
    """(truncated, dropped) rows the recipe's policy should report for its offline data."""
    dataset = _raw(recipe)["data"].get("dataset")
    if dataset in DATASETS:
        return DATASETS[dataset].truncated, DATASETS[dataset].dropped
    # The repository's own files: count the over-long texts with the model's tokenizer.
    tok = load_tokenizer(params)
    texts = [
        json.loads(line)[params.data.text_column]
        for path in (params.data.train_file, params.data.test_file)
        for line in Path(str(path)).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    over = sum(len(ids) > params.data.max_length for ids in tok(texts)["input_ids"])
    return (0, over) if params.data.truncation == "drop" else (over, 0)


def _run_cases() -> list[Any]:
    """One case per recipe; a recipe on the repository's own data (the quickstart: 1,500 reviews, ~40 s
    on 2 cores) trains and scores on all of it, so it is marked slow."""
    cases = []
    for recipe in RECIPES:
        own_data = _raw(recipe)["data"].get("dataset") is None
        cases.append(pytest.param(recipe, id=recipe.name, marks=[pytest.mark.slow] if own_data else []))
    return cases


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("recipe", _run_cases())
def test_recipe_runs_offline_end_to_end(
    recipe: Path, stand_ins: dict[str, str], mlflow_store: Any, tmp_path: Path
) -> None:
    params = offline_params(recipe, tmp_path, stand_ins)
    summary = finetune(params)

    run = mlflow_store.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    # The recipe's metrics on the validation split (val_) and on the test split (eval_), and the
    # evaluations during training on the validation split: the test split is only scored at the end.
    for name in _expected_metrics(params.eval.metrics):
        assert f"val_{name}" in metrics and f"eval_{name}" in metrics, name
    assert mlflow_store.get_metric_history(run.info.run_id, "val_loss")
    (dataset_input,) = run.inputs.dataset_inputs
    counts = {t.key: t.value for t in dataset_input.tags}
    assert int(counts["num_validation"]) > 0 and int(counts["num_test"]) > 0
    assert (metrics["data_truncated_rows"], metrics["data_dropped_rows"]) == _expected_cuts(recipe, params)

    table = _predictions(mlflow_store, run.info.run_id, tmp_path / "dl")
    assert len(table) == int(counts["num_test"])
    data = data_step.tokenize(params, str(Path(params.output_dir) / "cache" / "tokenized"))
    assert data.cached  # the run's own tokenized data, read back
    CHECKS[_raw(recipe)["data"].get("dataset")](params, load_from_disk(data.path), table)
