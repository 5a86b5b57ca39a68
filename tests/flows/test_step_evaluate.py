"""The evaluate step on tiny local models: batched, padded inference equals one-by-one inference.

Each test tokenizes a tiny dataset with the real tokenize step, builds an adapter with non-zero
LoRA B (and, for classification, a head whose argmax varies across inputs), saves it, and checks
that `evaluate(params, data, adapter_dir)` reports what the live model predicts example by example,
with no padding at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from seqeval import metrics as seqeval_metrics
from sklearn import metrics as sk

from flows.params import FinetuneParams
from flows.steps import TokenizedData
from flows.steps.data import tokenize
from flows.steps.evaluate import evaluate, evaluate_untrained
from flows.steps.model import build_peft_config, load_base_model, load_tokenizer
from peftcore import get_peft_model
from tests.flows import fixtures

REVIEWS = [
    ("the movie was great", "positive"),
    ("a terrible boring film", "negative"),
    ("i loved the music but the ending was weak", "positive"),
    ("the ending was weak", "negative"),
    ("the actors were wonderful and the story great", "positive"),
    ("not good at all", "negative"),
    ("really good fun", "positive"),
]
SENTENCES = [
    (["alice", "met", "bob"], ["B-PER", "O", "B-PER"]),
    (["paris", "is", "the", "capital", "of", "france"], ["B-LOC", "O", "O", "O", "O", "B-LOC"]),
    (["bob", "visited", "london"], ["B-PER", "O", "B-LOC"]),
    (["alice", "loved", "paris", "last", "year"], ["B-PER", "O", "B-LOC", "O", "O"]),
    (["london"], ["B-LOC"]),
]


def _setup(
    tmp_path: Path, task: str, rows: list[dict[str, Any]], **overrides: Any
) -> tuple[FinetuneParams, TokenizedData]:
    train = fixtures.write_jsonl(tmp_path / "train.jsonl", rows)
    test = fixtures.write_jsonl(tmp_path / "test.jsonl", rows)
    config: dict[str, Any] = {
        "model": {
            "name_or_path": fixtures.model_dir(tmp_path / "models", task),
            "task": task,
            "dtype": "float32",
        },
        "data": {"train_file": train, "test_file": test},
        "peft": {"r": 4, "init_lora_weights": False},  # non-zero B: the adapter changes outputs
        "train": {"eval_batch_size": 3},  # uneven batches of unequal lengths: padding is exercised
        "eval": {"num_logged_predictions": len(rows)},
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values}
    params = FinetuneParams.model_validate(config)
    return params, tokenize(params, str(tmp_path / "cache"))


def _save_adapter(params: FinetuneParams, data: TokenizedData, path: Path, head_std: float = 0.0) -> Any:
    torch.manual_seed(1)
    base = load_base_model(params, data.label_names)
    if head_std:  # a wide random head, so that the argmax differs between inputs
        torch.nn.init.normal_(base.classifier.weight, std=head_std)
    model = get_peft_model(base, build_peft_config(params)).eval()
    model.save_pretrained(str(path))
    return model


def _split_head_between_examples(model: Any, examples: list[dict[str, Any]]) -> None:
    """Shift the trained head's class-1 bias so that about half the examples flip to class 1.

    A random tiny encoder gives nearly the same pooled vector for every input, so a random head
    predicts one class for all; the threshold goes halfway between two neighbouring margins, far
    from any example compared with padding noise.
    """
    margins = sorted(float(_logits(model, row)[1] - _logits(model, row)[0]) for row in examples)
    middle = len(margins) // 2
    threshold = (margins[middle - 1] + margins[middle]) / 2
    (bias,) = [
        p for n, p in model.named_parameters() if "modules_to_save.default" in n and n.endswith("bias")
    ]
    with torch.no_grad():
        bias[1] -= threshold


def _examples(data: TokenizedData) -> list[dict[str, Any]]:
    from datasets import load_from_disk

    return list(load_from_disk(data.path)["test"])


def _logits(model: Any, row: dict[str, Any]) -> torch.Tensor:
    inputs = {
        k: torch.tensor([row[k]]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in row
    }
    with torch.no_grad():
        return model(**inputs).logits[0]


def test_seq_cls_metrics_and_predictions_match_unpadded_inference(tmp_path: Path) -> None:
    rows = [{"text": t, "label": y} for t, y in REVIEWS]
    params, data = _setup(
        tmp_path, "seq_cls", rows, eval={"metrics": ["accuracy", "f1", "precision", "recall"]}
    )
    live = _save_adapter(params, data, tmp_path / "adapter", head_std=5.0)
    examples = _examples(data)
    _split_head_between_examples(live, examples)
    live.save_pretrained(str(tmp_path / "adapter"))
    expected = [int(_logits(live, row).argmax()) for row in examples]
    references = [row["labels"] for row in examples]
    assert len(set(expected)) == 2, "one class only: the test could not tell a wrong head from the right one"

    result = evaluate(params, data, str(tmp_path / "adapter"))

    names = data.label_names
    assert [p["prediction"] for p in result.predictions] == [names[i] for i in expected]
    assert [p["reference"] for p in result.predictions] == [y for _, y in REVIEWS]
    assert [p["input"] for p in result.predictions] == [t for t, _ in REVIEWS]
    assert [p["correct"] for p in result.predictions] == [e == r for e, r in zip(expected, references)]
    assert result.metrics == pytest.approx(
        {
            "accuracy": sk.accuracy_score(references, expected),
            "f1": sk.f1_score(references, expected, zero_division=0),
            "precision": sk.precision_score(references, expected, zero_division=0),
            "recall": sk.recall_score(references, expected, zero_division=0),
        },
        abs=1e-12,
    )


def test_untrained_is_the_seeded_starting_point_of_training(tmp_path: Path) -> None:
    rows = [{"text": t, "label": y} for t, y in REVIEWS]
    params, data = _setup(tmp_path, "seq_cls", rows, peft={"init_lora_weights": True})
    torch.manual_seed(params.train.seed)  # as the train step seeds before building its model
    start = load_base_model(params, data.label_names).eval()  # B = 0: the adapter adds nothing yet
    examples = _examples(data)
    expected = [int(_logits(start, row).argmax()) for row in examples]

    result = evaluate_untrained(params, data)

    assert [p["prediction"] for p in result.predictions] == [data.label_names[i] for i in expected]
    assert result.metrics == {"accuracy": sk.accuracy_score([r["labels"] for r in examples], expected)}


def test_token_cls_scores_first_subtokens_with_seqeval(tmp_path: Path) -> None:
    rows = [{"tokens": w, "label": t} for w, t in SENTENCES]
    params, data = _setup(tmp_path, "token_cls", rows, eval={"metrics": ["seqeval", "accuracy"]})
    live = _save_adapter(params, data, tmp_path / "adapter", head_std=5.0)
    names = data.label_names
    pred_tags, ref_tags = [], []
    for row in _examples(data):
        ids = _logits(live, row).argmax(-1).tolist()
        keep = [i for i, label in enumerate(row["labels"]) if label != -100]
        pred_tags.append([names[ids[i]] for i in keep])
        ref_tags.append([names[row["labels"][i]] for i in keep])
    assert [len(t) for t in ref_tags] == [len(w) for w, _ in SENTENCES]  # one tag per word

    result = evaluate(params, data, str(tmp_path / "adapter"))

    assert result.metrics["overall_f1"] == pytest.approx(
        seqeval_metrics.f1_score(ref_tags, pred_tags), abs=1e-12
    )
    assert result.metrics["overall_precision"] == pytest.approx(
        seqeval_metrics.precision_score(ref_tags, pred_tags), abs=1e-12
    )
    flat_p = [t for row in pred_tags for t in row]
    flat_r = [t for row in ref_tags for t in row]
    assert result.metrics["accuracy"] == pytest.approx(sk.accuracy_score(flat_r, flat_p), abs=1e-12)
    assert result.metrics["overall_accuracy"] == result.metrics["accuracy"]
    assert [p["prediction"] for p in result.predictions] == [" ".join(t) for t in pred_tags]
    assert [p["input"] for p in result.predictions] == [" ".join(w) for w, _ in SENTENCES]


@pytest.mark.parametrize("task", ["causal_lm", "seq2seq_lm"])
def test_batched_generation_equals_one_by_one(tmp_path: Path, task: str) -> None:
    rows = [{"text": t, "target": y} for t, y in REVIEWS]
    params, data = _setup(
        tmp_path,
        task,
        rows,
        data={"target_column": "target", "prompt_template": "review: {text} sentiment:"},
        eval={"metrics": ["exact_match", "rouge"], "max_new_tokens": 4},
    )
    live = _save_adapter(params, data, tmp_path / "adapter")
    tokenizer = load_tokenizer(params)
    prompts = [f"review: {t} sentiment:" for t, _ in REVIEWS]
    expected = []
    for prompt in prompts:  # one at a time: no padding anywhere
        ids = tokenizer(prompt, add_special_tokens=task == "seq2seq_lm", return_tensors="pt")["input_ids"]
        out = live.generate(
            input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        new = out[0, ids.shape[1] :] if task == "causal_lm" else out[0]
        expected.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    assert len(set(expected)) > 1 or task == "seq2seq_lm"

    result = evaluate(params, data, str(tmp_path / "adapter"))

    assert [p["input"] for p in result.predictions] == prompts
    assert [p["prediction"] for p in result.predictions] == expected
    assert [p["reference"] for p in result.predictions] == [y for _, y in REVIEWS]
    hits = sum(e == y for e, (_, y) in zip(expected, REVIEWS))
    assert result.metrics["exact_match"] == hits / len(REVIEWS)
    assert set(result.metrics) == {"exact_match", "rouge1", "rouge2", "rougeL", "rougeLsum"}


def test_a_metric_that_does_not_fit_the_task_fails_before_any_model_loads(tmp_path: Path) -> None:
    rows = [{"text": t, "label": y} for t, y in REVIEWS]
    params, data = _setup(tmp_path, "seq_cls", rows, eval={"metrics": ["bleu"]})
    with pytest.raises(ValueError, match="'bleu' scores text"):
        evaluate(params, data, str(tmp_path / "no-adapter-here"))
