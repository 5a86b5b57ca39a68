"""The batched `datasets.map` functions that turn validated rows into token ids, per task.

Nothing is padded here (the collator pads each batch; labels with -100). Columns per task; the
validation and test splits also keep what evaluation reads:

| task       | every split                                             | validation / test           |
|------------|---------------------------------------------------------|-----------------------------|
| seq_cls    | input_ids, attention_mask, (token_type_ids), labels     | text                        |
| token_cls  | same; labels on each word's first sub-token, else -100  | text, tokens (the words)    |
| causal_lm  | input_ids, attention_mask, labels (-100 off the trained | prompt, prompt_ids,         |
|            | segments; see format.py)                                | reference, inputs           |
| seq2seq_lm | input_ids = prompt, labels = target                     | prompt, prompt_ids,         |
|            |                                                         | reference, inputs           |

`inputs` is the row as a user sends it to the logged model: JSON of its input columns.

Rows the truncation policy cuts or drops are counted in `counts[(split, status)]`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from flows.params import FinetuneParams
from flows.steps.data.format import RowFormat

Batch = dict[str, list[Any]]
MapFn = Callable[[Batch, list[int]], Batch]


def encoder(
    params: FinetuneParams,
    tokenizer: Any,
    label_names: list[str] | None,
    split: str,
    counts: Counter[tuple[str, str]],
) -> MapFn:
    """The map function (batched, with indices) for params.model.task on split `split`."""
    d, task = params.data, params.model.task
    keep_raw = split != "train"
    if task in ("seq_cls", "token_cls"):
        return _classification(params, tokenizer, label_names, split, counts)
    fmt = RowFormat(params, tokenizer)

    def generative(batch: Batch, indices: list[int]) -> Batch:
        out: Batch = {"input_ids": [], "attention_mask": [], "labels": []}
        if keep_raw:
            out.update(prompt=[], prompt_ids=[], reference=[], inputs=[])
        for index, row in zip(indices, _rows(batch)):
            try:
                if task == "causal_lm":
                    fitted = fmt.encode(row)
                    ids, labels, status = fitted.ids, fitted.labels, fitted.status
                else:
                    ids, labels, status = _seq2seq(fmt, tokenizer, row, d.max_length, d.max_target_length)
                prompt, reference = fmt.prompt_and_reference(row) if keep_raw else ("", "")
            except Exception as err:  # a template that fails on this row: say which row
                raise ValueError(f"row {index} of the {split} split: {type(err).__name__}: {err}") from err
            counts[(split, status)] += 1
            if status == "dropped":
                continue
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(labels)
            if keep_raw:
                out["prompt"].append(prompt)
                out["prompt_ids"].append(fmt.prompt_ids(prompt) if task == "causal_lm" else ids)
                out["reference"].append(reference)
                # The row as a user would send it to the logged model (JSON: the input columns).
                out["inputs"].append(json.dumps(fmt.inference_row(row), ensure_ascii=False))
        return out

    return generative


def _rows(batch: Batch) -> list[dict[str, Any]]:
    return [dict(zip(batch, values)) for values in zip(*batch.values())]


def _seq2seq(
    fmt: RowFormat, tokenizer: Any, row: dict[str, Any], max_length: int, max_target_length: int
) -> tuple[list[int], list[int], str]:
    """Encoder ids (the prompt, cut by the policy) and labels (the target, cut at max_target_length)."""
    prompt, target = fmt.prompt_and_reference(row)
    full = tokenizer(prompt)["input_ids"]
    labels = tokenizer(text_target=target)["input_ids"]
    status = "kept"
    if len(full) > max_length:
        if fmt.truncation == "drop":
            return [], [], "dropped"
        tokenizer.truncation_side = fmt.truncation
        full = tokenizer(prompt, truncation=True, max_length=max_length)["input_ids"]
        status = "truncated"
    if len(labels) > max_target_length:
        tokenizer.truncation_side = "right"
        labels = tokenizer(text_target=target, truncation=True, max_length=max_target_length)["input_ids"]
        status = "truncated"
    return list(full), list(labels), status


def _classification(
    params: FinetuneParams,
    tokenizer: Any,
    label_names: list[str] | None,
    split: str,
    counts: Counter[tuple[str, str]],
) -> MapFn:
    d, token_level = params.data, params.model.task == "token_cls"
    policy = d.truncation or "right"
    to_id = {name: i for i, name in enumerate(label_names or [])}

    def label_id(value: Any) -> int:
        return value if isinstance(value, int) else to_id[value]

    def encode(inputs: list[Any]) -> Any:
        kwargs: dict[str, Any] = {"is_split_into_words": True} if token_level else {}
        lengths = [len(ids) for ids in tokenizer(inputs, **kwargs)["input_ids"]]
        over = [n > d.max_length for n in lengths]
        keep = [i for i, long in enumerate(over) if not (long and policy == "drop")]
        for long in over:
            counts[(split, ("dropped" if policy == "drop" else "truncated") if long else "kept")] += 1
        tokenizer.truncation_side = "left" if policy == "left" else "right"
        enc = tokenizer([inputs[i] for i in keep], truncation=True, max_length=d.max_length, **kwargs)
        return enc, keep

    def classify(batch: Batch, indices: list[int]) -> Batch:
        column = d.tokens_column if token_level else d.text_column
        enc, keep = encode(batch[column])
        out = dict(enc)
        labels = [batch[d.label_column][i] for i in keep]
        if token_level:
            out["labels"] = [
                _align(enc.word_ids(k), [label_id(t) for t in tags]) for k, tags in enumerate(labels)
            ]
        else:
            out["labels"] = [label_id(v) for v in labels]
        if split != "train":
            inputs = [batch[column][i] for i in keep]
            if token_level:
                out["tokens"] = inputs
                out["text"] = [" ".join(words) for words in inputs]
            else:
                out["text"] = inputs
        return out

    return classify


def _align(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """One label per token: the word's tag on its first sub-token, -100 on the rest and on specials."""
    out, previous = [], None
    for word in word_ids:
        out.append(-100 if word is None or word == previous else tags[word])
        previous = word
    return out
