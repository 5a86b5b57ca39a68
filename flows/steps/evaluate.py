"""Evaluate step: score an adapter on the held-out split with the metrics in params.eval.metrics.

Inference is batched (params.train.eval_batch_size) with dynamic padding, without gradients, on
the GPU when there is one:
- seq_cls: the argmax class of each example;
- token_cls: the argmax tag of each token whose label is not -100 (the first sub-token of each
  word), as tag names for seqeval;
- causal_lm / seq2seq_lm: `generate` from the "prompt" column (greedy unless eval.num_beams > 1),
  compared as text with the "reference" column. Causal prompts are left-padded so that every
  continuation starts right after its prompt, and the prompt is cut from the output.

`evaluate_untrained` scores the run's starting point instead: the base model with a freshly
initialised adapter (and, for classification, the freshly initialised head), seeded as training is.
"""

from __future__ import annotations

from typing import Any

import torch

from flows.metrics import check_metrics, compute_metrics
from flows.params import FinetuneParams
from flows.steps import EvalResult, TokenizedData

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def evaluate(params: FinetuneParams, data: TokenizedData, adapter_dir: str) -> EvalResult:
    """Score the adapter saved in `adapter_dir` on the test split of `data`."""
    from flows.steps.model import load_base_model
    from peftcore import PeftModel

    check_metrics(params.eval.metrics, params.model.task)
    device = _device()
    model = PeftModel.from_pretrained(load_base_model(params, data.label_names, device=device), adapter_dir)
    return score(params, data, model.to(device))


def evaluate_untrained(params: FinetuneParams, data: TokenizedData) -> EvalResult:
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
    return score(params, data, model.to(_device()))


def score(params: FinetuneParams, data: TokenizedData, model: Any) -> EvalResult:
    """Predict the test split of `data` with `model` (a live model on its device) and score it."""
    from datasets import load_from_disk

    from flows.steps.model import load_tokenizer

    test = load_from_disk(data.path)["test"].with_format(None)  # plain Python rows
    if len(test) == 0:
        raise ValueError(f"the test split of {data.path} is empty: nothing to evaluate")
    model.eval()
    tokenizer = load_tokenizer(params)
    task = params.model.task
    with torch.inference_mode():
        if task in ("seq_cls", "token_cls"):
            predictions, references = _classify(params, test, model, tokenizer)
        else:
            predictions, references = _generate(params, test, model, tokenizer)
    metrics = compute_metrics(params.eval.metrics, task, predictions, references, data.label_names)
    sample = _sample(params, test, tokenizer, predictions, references, data.label_names)
    return EvalResult(metrics=metrics, predictions=sample)


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


def _classify(params: FinetuneParams, test: Any, model: Any, tokenizer: Any) -> tuple[list[Any], list[Any]]:
    """Argmax predictions and references: class ids (seq_cls) or per-example tag-id lists (token_cls)."""
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    token_level = params.model.task == "token_cls"
    label = _label_column(test)
    columns = [c for c in _MODEL_INPUTS if c in test.column_names]
    rows = test.select_columns([*columns, label])
    if label != "labels":
        rows = rows.rename_column(label, "labels")
    collate = (DataCollatorForTokenClassification if token_level else DataCollatorWithPadding)(tokenizer)
    device = next(model.parameters()).device
    predictions: list[Any] = []
    references: list[Any] = []
    for chunk in _batches(rows, params.train.eval_batch_size):
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


def _generate(params: FinetuneParams, test: Any, model: Any, tokenizer: Any) -> tuple[list[str], list[str]]:
    """Generated continuations of the "prompt" column, and the "reference" column."""
    for name in ("prompt", "reference"):
        if name not in test.column_names:
            raise ValueError(
                f"generative evaluation needs a {name!r} column (test columns: {test.column_names})"
            )
    causal = params.model.task == "causal_lm"
    device = next(model.parameters()).device
    predictions: list[str] = []
    for chunk in _batches(test.select_columns(["prompt"]), params.train.eval_batch_size):
        enc = _encode_prompts(params, tokenizer, list(chunk["prompt"])).to(device)
        out = model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=params.eval.max_new_tokens,
            num_beams=params.eval.num_beams,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        if causal:
            out = out[:, enc["input_ids"].shape[1] :]
        predictions += [text.strip() for text in tokenizer.batch_decode(out, skip_special_tokens=True)]
    return predictions, list(test["reference"])


def _encode_prompts(params: FinetuneParams, tokenizer: Any, prompts: list[str]) -> Any:
    """A padded batch of prompts, tokenized as the tokenize step tokenized them for training."""
    if params.model.task == "seq2seq_lm":
        return tokenizer(
            prompts, padding=True, truncation=True, max_length=params.data.max_length, return_tensors="pt"
        )
    from flows.steps.data import _special_prefix

    # Causal training rows are [special prefix] prompt target eos, so the prompt gets the prefix and
    # no eos; a long prompt keeps its end, which the continuation depends on. Left padding puts every
    # prompt's last token right before the first generated one.
    prefix = _special_prefix(tokenizer)
    budget = max(params.data.max_length - len(prefix), 1)
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    rows = [{"input_ids": [*prefix, *row[-budget:]]} for row in ids]
    tokenizer.padding_side = "left"
    return tokenizer.pad(rows, padding=True, return_tensors="pt")


def _sample(
    params: FinetuneParams,
    test: Any,
    tokenizer: Any,
    predictions: list[Any],
    references: list[Any],
    label_names: list[str] | None,
) -> list[dict[str, Any]]:
    """The first eval.num_logged_predictions rows: input text, reference, prediction, correct."""
    n = min(params.eval.num_logged_predictions, len(predictions))
    rows = test.select(range(n))
    task = params.model.task

    def name(i: int) -> Any:
        return label_names[i] if label_names and 0 <= i < len(label_names) else i

    sample = []
    for k in range(n):
        row = rows[k]
        if "prompt" in row:
            text = row["prompt"]
        elif "text" in row:
            text = row["text"]
        elif isinstance(row.get("tokens"), list):
            text = " ".join(row["tokens"])
        else:
            text = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
        pred, ref = predictions[k], references[k]
        if task == "seq_cls":
            pred, ref = name(pred), name(ref)
        elif task == "token_cls":
            pred, ref = " ".join(str(name(i)) for i in pred), " ".join(str(name(i)) for i in ref)
        correct = (
            pred.strip() == ref.strip() if isinstance(pred, str) and isinstance(ref, str) else pred == ref
        )
        sample.append({"input": text, "reference": ref, "prediction": pred, "correct": bool(correct)})
    return sample
