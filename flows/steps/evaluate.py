"""Evaluate step: score an adapter on the held-out splits with the metrics in params.eval.metrics.

Inference is batched (params.train.eval_batch_size) with dynamic padding, without gradients, on
the GPU when there is one:
- seq_cls: the argmax class of each example;
- token_cls: the argmax tag of each token whose label is not -100 (the first sub-token of each
  word), as tag names for seqeval;
- `perplexity` (causal_lm / seq2seq_lm): exp of the mean loss over the split's target tokens, computed
  as training computes it;
- causal_lm / seq2seq_lm, other metrics: `generate` from the "prompt_ids" column — the prompt as the tokenize step
  formatted it (flows.steps.data.format: templates, the chat template up to the last assistant turn)
  — greedy unless eval.num_beams > 1, compared as text with the "reference" column. Causal prompts
  are left-padded so that every continuation starts right after its prompt, and the prompt is cut
  from the output.

The validation split (`val_<metric>`) is what selection reads; the test split (`eval_<metric>`) is
scored once, at the end. Every prediction is returned, one row per example.

`evaluate_untrained` scores the run's starting point instead: the base model with a freshly
initialised adapter (and, for classification, the freshly initialised head), seeded as training is.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flows.metrics import MODEL_METRICS, check_metrics, compute_metrics
from flows.params import MEDIA_TASKS, FinetuneParams
from flows.steps import EvalResult, TokenizedData

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def evaluate(
    params: FinetuneParams, data: TokenizedData, adapter_dir: str, split: str = "test"
) -> EvalResult:
    """Score the adapter saved in `adapter_dir` on one split of `data` ("test" or "validation")."""
    return evaluate_splits(params, data, adapter_dir, (split,))[split]


def evaluate_splits(
    params: FinetuneParams,
    data: TokenizedData,
    adapter_dir: str,
    splits: tuple[str, ...] = ("validation", "test"),
) -> dict[str, EvalResult]:
    """Score the adapter on each of `splits` that `data` has, loading the model once."""
    from flows.steps.model import load_base_model
    from peftcore import PeftModel

    check_metrics(params.eval.metrics, params.model.task)
    present = [s for s in splits if s != "validation" or data.num_validation > 0]
    device = _device()
    model = PeftModel.from_pretrained(load_base_model(params, data.label_names, device=device), adapter_dir)
    model = model.to(device)
    return {split: score(params, data, model, split) for split in present}


def evaluate_untrained(params: FinetuneParams, data: TokenizedData, split: str = "test") -> EvalResult:
    """Score the base model with a fresh adapter: the baseline the trained adapter is compared with.

    The seed is set as the train step sets it before building the model, so a new classification
    head starts from the same weights as the head training starts from.
    """
    from transformers import set_seed

    from flows.steps.model import build_peft_config, load_base_model
    from peftcore import get_peft_model

    check_metrics(params.eval.metrics, params.model.task)
    set_seed(params.train.seed)
    model = get_peft_model(load_base_model(params, data.label_names), build_peft_config(params))
    return score(params, data, model.to(_device()), split)


def score(params: FinetuneParams, data: TokenizedData, model: Any, split: str = "test") -> EvalResult:
    """Predict one split of `data` with `model` (a live model on its device) and score it."""
    from datasets import load_from_disk

    from flows.steps.model import load_tokenizer

    splits = load_from_disk(data.path)
    if split not in splits:
        raise ValueError(f"{data.path} has no {split} split (splits: {sorted(splits)})")
    rows = splits[split].with_format(None)  # plain Python rows
    if len(rows) == 0:
        raise ValueError(f"the {split} split of {data.path} is empty: nothing to evaluate")
    model.eval()
    task = params.model.task
    if task in MEDIA_TASKS:
        from flows.steps.media_eval import score_media

        return score_media(params, data, model, rows)
    tokenizer = load_tokenizer(params)
    names = params.eval.metrics
    predicting = any(name not in MODEL_METRICS for name in names)
    predictions: list[Any] = []
    references: list[Any] = []
    metrics: dict[str, float] = {}
    with torch.inference_mode():
        if "perplexity" in names:
            metrics["perplexity"] = _perplexity(params, rows, model, tokenizer)
        if predicting and task in ("seq_cls", "token_cls"):
            predictions, references = _classify(params, rows, model, tokenizer)
        elif predicting:
            predictions, references = _generate(params, rows, model, tokenizer)
    if predicting:
        metrics |= compute_metrics(names, task, predictions, references, data.label_names)
    table = _table(params, rows, tokenizer, predictions, references, data.label_names)
    return EvalResult(metrics=metrics, predictions=table)


def _perplexity(params: FinetuneParams, rows: Any, model: Any, tokenizer: Any) -> float:
    """exp(mean loss over every target token of the split), the loss as training computes it."""
    from flows.steps.trainer import data_collator, target_tokens, token_loss_sum

    causal = params.model.task == "causal_lm"
    collate = data_collator(params.model.task, tokenizer, model)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    inputs = rows.select_columns(["input_ids", "attention_mask", "labels"])
    for chunk in _batches(inputs, params.train.eval_batch_size):
        batch = {k: v.to(device) for k, v in collate([dict(row) for row in chunk]).items()}
        labels = batch["labels"]
        logits = model(**batch).logits
        total += float(token_loss_sum(logits, labels, causal))
        count += int(target_tokens(labels, causal))
    return math.exp(total / max(count, 1))


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _batches(dataset: Any, size: int) -> Any:
    for start in range(0, len(dataset), size):
        yield dataset.select(range(start, min(start + size, len(dataset))))


def _label_column(dataset: Any) -> str:
    for name in ("labels", "label"):
        if name in dataset.column_names:
            return name
    raise ValueError(f"the test split has no labels/label column (columns: {dataset.column_names})")


def _classify(params: FinetuneParams, rows: Any, model: Any, tokenizer: Any) -> tuple[list[Any], list[Any]]:
    """Argmax predictions and references: class ids (seq_cls) or per-example tag-id lists (token_cls)."""
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    token_level = params.model.task == "token_cls"
    label = _label_column(rows)
    columns = [c for c in _MODEL_INPUTS if c in rows.column_names]
    inputs = rows.select_columns([*columns, label])
    if label != "labels":
        inputs = inputs.rename_column(label, "labels")
    collate = (DataCollatorForTokenClassification if token_level else DataCollatorWithPadding)(tokenizer)
    device = next(model.parameters()).device
    predictions: list[Any] = []
    references: list[Any] = []
    for chunk in _batches(inputs, params.train.eval_batch_size):
        batch = collate([dict(row) for row in chunk])
        labels = batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        ids = logits.argmax(-1).cpu()
        if not token_level:
            predictions += ids.tolist()
            references += labels.tolist()
            continue
        for pred_row, label_row in zip(ids, labels):
            keep = label_row != -100  # special tokens, padding and non-first sub-tokens
            predictions.append(pred_row[keep].tolist())
            references.append(label_row[keep].tolist())
    return predictions, references


def _generate(params: FinetuneParams, rows: Any, model: Any, tokenizer: Any) -> tuple[list[str], list[str]]:
    """Generated continuations of the "prompt_ids" column, and the "reference" column."""
    for name in ("prompt_ids", "reference"):
        if name not in rows.column_names:
            raise ValueError(
                f"generative evaluation needs a {name!r} column (columns: {rows.column_names}); "
                "re-run the tokenize step"
            )
    from flows.steps.predict import generate

    return generate(params, model, tokenizer, list(rows["prompt_ids"])), list(rows["reference"])


def _table(
    params: FinetuneParams,
    rows: Any,
    tokenizer: Any,
    predictions: list[Any],
    references: list[Any],
    label_names: list[str] | None,
) -> list[dict[str, Any]]:
    """One row per example: input text, reference, prediction, whether they agree."""
    task = params.model.task

    def name(i: int) -> Any:
        return label_names[i] if label_names and 0 <= i < len(label_names) else i

    columns = rows.column_names
    table = []
    for k, (pred, ref) in enumerate(zip(predictions, references)):
        if "prompt" in columns:
            text = rows[k]["prompt"]
        elif "text" in columns:
            text = rows[k]["text"]
        else:
            text = tokenizer.decode(rows[k]["input_ids"], skip_special_tokens=True)
        if task == "seq_cls":
            pred, ref = name(pred), name(ref)
        elif task == "token_cls":
            pred, ref = " ".join(str(name(i)) for i in pred), " ".join(str(name(i)) for i in ref)
        correct = (
            pred.strip() == ref.strip() if isinstance(pred, str) and isinstance(ref, str) else pred == ref
        )
        table.append({"input": text, "reference": ref, "prediction": pred, "correct": bool(correct)})
    return table
