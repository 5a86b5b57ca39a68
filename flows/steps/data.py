"""Tokenize step: load a dataset (Hub id or local files), validate it, tokenize it once, cache it.

Output: `cache_dir/<cache_key>/`, a `DatasetDict` saved with `save_to_disk`, splits "train" and
"test", plus `peftflow_meta.json`. Nothing is padded: the collator pads each batch (labels with
-100). Columns per task (the test split also keeps raw text, for evaluation and predictions):

| task       | both splits                                            | test split only          |
|------------|--------------------------------------------------------|--------------------------|
| seq_cls    | input_ids, attention_mask, (token_type_ids), labels    | text                     |
| token_cls  | same; labels on each word's first sub-token, else -100 | text, tokens (the words) |
| causal_lm  | input_ids = [bos] prompt target eos, labels -100 on    | prompt, reference        |
|            | [bos] and the prompt                                   |                          |
| seq2seq_lm | input_ids = prompt, labels = target                    | prompt, reference        |

Over-long causal examples lose the start of the prompt first and keep at least half of max_length
for the target. `cache_key` hashes everything that shapes the output (raw data fingerprint,
tokenizer identity, task, columns, template, labels, lengths, splits, seed); a complete cache
directory is reused without tokenizing. Directories appear atomically (written aside, then
renamed), so one that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.params import DataParams, FinetuneParams
from flows.steps import TokenizedData, file_sha256
from flows.steps.model import load_tokenizer, tokenizer_identity

FORMAT_VERSION = "1"  # bump when the tokenization below changes what it writes
META = "peftflow_meta.json"
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}

Batch = dict[str, list[Any]]


def tokenize(params: FinetuneParams, cache_dir: str) -> TokenizedData:
    """Tokenize params.data for params.model; reuse `cache_dir/<cache_key>/` when already done."""
    from datasets import DatasetDict

    d = params.data
    local = _local_files(d)
    # Local files are fingerprinted by their bytes, so a cache hit needs no parsing at all.
    fingerprint = (
        _hash(*(f"{split}={Path(p).name}:{file_sha256(p)}" for split, p in local.items())) if local else ""
    )
    source = ", ".join(f"{split}={os.path.abspath(p)}" for split, p in local.items())
    key = _cache_key(params, fingerprint) if local else ""
    if local and (hit := _cached(cache_dir, key)):
        return hit
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=_mkdir(cache_dir)) as work:
        raw = _load_local(local, d, os.path.join(work, "raw")) if local else _load_hub(d)
        if not local:  # Hub datasets: the revision and the datasets fingerprints of what was loaded
            fingerprint = _hash(d.dataset, d.config_name, d.revision, *(s._fingerprint for s in raw.values()))
            source = f"{d.dataset}{'/' + d.config_name if d.config_name else ''}@{d.revision or 'main'}"
            key = _cache_key(params, fingerprint)
            if hit := _cached(cache_dir, key):
                return hit
        splits = _select_splits(raw, d, params.train.seed, source)
        label_names = _validate(splits, params)
        tokenizer = load_tokenizer(params)
        encoded = {
            name: split.map(
                _encoder(params, tokenizer, label_names, keep_raw=name == "test"),
                batched=True,
                remove_columns=split.column_names,
                cache_file_name=os.path.join(work, f"map-{name}.arrow"),
                load_from_cache_file=False,
                new_fingerprint=_hash(key, name)[:16],  # skips hashing the tokenizer
                desc=f"Tokenizing {name}",
            )
            for name, split in splits.items()
        }
        train_ids = encoded["train"].with_format("arrow")["input_ids"]
        meta = {
            "fingerprint": fingerprint,
            "cache_key": key,
            "task": params.model.task,
            "label_names": label_names,
            "num_train": len(encoded["train"]),
            "num_test": len(encoded["test"]),
            "num_train_tokens": _count_tokens(train_ids),  # unpadded, so every token is a real one
            "source": source,
        }
        staged = os.path.join(work, "out")
        DatasetDict(encoded).save_to_disk(staged)
        Path(staged, META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        final = os.path.join(cache_dir, key)
        try:
            os.replace(staged, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, META)):  # not a concurrent run that finished first
                raise
    return _result(final, meta, cached=False)


# -- cache ---------------------------------------------------------------------------------------
def _cache_key(params: FinetuneParams, fingerprint: str) -> str:
    d = params.data
    shaping = {
        "format": FORMAT_VERSION,
        "data": fingerprint,
        "tokenizer": tokenizer_identity(params.model),
        "task": params.model.task,
        "columns": [d.text_column, d.label_column, d.tokens_column, d.target_column],
        "template": d.prompt_template,
        "label_names": d.label_names,
        "lengths": [d.max_length, d.max_target_length],
        "splits": [d.train_split, d.test_split, d.test_fraction],
        "seed": params.train.seed,
    }
    return _hash(json.dumps(shaping, sort_keys=True))


def _cached(cache_dir: str, key: str) -> TokenizedData | None:
    from datasets import load_from_disk

    final = os.path.join(cache_dir, key)
    if not os.path.isfile(os.path.join(final, META)):
        return None
    meta = json.loads(Path(final, META).read_text(encoding="utf-8"))
    splits = load_from_disk(final)
    meta["num_train"], meta["num_test"] = len(splits["train"]), len(splits["test"])
    return _result(final, meta, cached=True)


def _result(path: str, meta: dict[str, Any], cached: bool) -> TokenizedData:
    return TokenizedData(path=path, cached=cached, **meta)


# -- loading ---------------------------------------------------------------------------------------
def _local_files(d: DataParams) -> dict[str, str]:
    """{split name: path} of the local data files, each checked to exist."""
    if d.test_file is not None and d.test_split == d.train_split:
        raise ValueError(
            f"data.test_split={d.test_split!r} must differ from data.train_split with a test_file"
        )
    out: dict[str, str] = {}
    for field, split in (("train_file", d.train_split), ("test_file", d.test_split)):
        path = getattr(d, field)
        if path is None:
            continue
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"data.{field}={path!r} does not exist (working directory: {os.getcwd()})"
            )
        out[split] = path
    return out


def _load_local(files: dict[str, str], d: DataParams, cache_dir: str) -> Any:
    from datasets import DatasetDict, load_dataset

    out = {}
    for split, path in files.items():
        where = f"data.{'train_file' if split == d.train_split else 'test_file'}={path!r}"
        builder = _BUILDERS[Path(path).suffix.lower()]
        try:
            out[split] = load_dataset(builder, data_files=path, split="train", cache_dir=cache_dir)
        except Exception as err:  # datasets wraps the parser's error; say which file and where
            if "corresponds to no data" in str(err) or os.path.getsize(path) == 0:
                raise ValueError(
                    f"{where}: the file has no rows, so the {split} split would be empty"
                ) from err
            raise ValueError(f"{where}: {_parse_error(path, builder, err)}") from err
    return DatasetDict(out)


def _parse_error(path: str, builder: str, err: Exception) -> str:
    if builder == "json":
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        try:
            json.loads(text)
        except json.JSONDecodeError as whole:
            lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
            if lines and lines[0][1].lstrip().startswith("{"):  # JSON lines: report the first bad line
                for number, line in lines:
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as bad:
                        return (
                            f"line {number} is not valid JSON ({bad.msg}, column {bad.colno}): {line[:80]!r}"
                        )
            return f"not valid JSON at line {whole.lineno}, column {whole.colno} ({whole.msg})"
    cause = err.__cause__ or err
    return f"could not be read as {builder}: {type(cause).__name__}: {cause}"


def _load_hub(d: DataParams) -> Any:
    from datasets import DatasetDict, load_dataset, load_from_disk

    assert d.dataset is not None  # DataParams guarantees a dataset or a train_file
    try:
        saved = any(os.path.isfile(os.path.join(d.dataset, f)) for f in ("dataset_dict.json", "state.json"))
        if saved:  # a directory written by save_to_disk
            loaded = load_from_disk(d.dataset)
        else:
            loaded = load_dataset(d.dataset, d.config_name, revision=d.revision)
    except Exception as err:
        raise ValueError(
            f"data.dataset={d.dataset!r} (config_name={d.config_name!r}, revision={d.revision!r}) could not be "
            f"loaded: {type(err).__name__}: {err}"
        ) from err
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})


def _select_splits(raw: Any, d: DataParams, seed: int, source: str) -> dict[str, Any]:
    """{"train", "test"}: the named splits, or test_fraction of train carved off with `seed`."""
    available = sorted(raw.keys())
    if d.train_split not in raw:
        raise ValueError(
            f"data.train_split={d.train_split!r} is not a split of {source} (splits: {available})"
        )
    train = raw[d.train_split]
    if len(train) == 0:
        raise ValueError(f"split {d.train_split!r} of {source} is empty (data.train_split)")
    if d.test_split in raw and d.test_split != d.train_split:
        return {"train": train, "test": raw[d.test_split]}
    if d.test_fraction is None:
        raise ValueError(
            f"data.test_split={d.test_split!r} is not a split of {source} (splits: {available}); name one of "
            f"them, give data.test_file, or set data.test_fraction to carve the test split from train"
        )
    n_test = math.ceil(d.test_fraction * len(train))
    if n_test >= len(train):
        raise ValueError(
            f"data.test_fraction={d.test_fraction} of {len(train)} train rows leaves no train rows; "
            f"use a smaller fraction or more data"
        )
    parts = train.train_test_split(test_size=n_test, seed=seed, shuffle=True)
    return {"train": parts["train"], "test": parts["test"]}


# -- validation ------------------------------------------------------------------------------------
def _validate(splits: dict[str, Any], params: FinetuneParams) -> list[str] | None:
    """Check columns, emptiness and labels before any tokenizing; returns the label names."""
    d, task = params.data, params.model.task
    # (how the error names it, column) for each column the task reads
    needed = {
        "seq_cls": [(f"data.text_column={d.text_column!r}", d.text_column)],
        "token_cls": [(f"data.tokens_column={d.tokens_column!r}", d.tokens_column)],
    }.get(task, [])
    if task in ("seq_cls", "token_cls"):
        needed.append((f"data.label_column={d.label_column!r}", d.label_column))
    else:
        if d.target_column is None:
            raise ValueError(
                f"data.target_column is required for model.task={task!r}: the column to generate"
            )
        needed.append((f"data.target_column={d.target_column!r}", d.target_column))
        needed += [(f"{{{f}}} in data.prompt_template", f) for f in _template_fields(d.prompt_template)]
        if d.prompt_template is None:
            needed.append((f"data.text_column={d.text_column!r}", d.text_column))
    for name, split in splits.items():
        if len(split) == 0:
            raise ValueError(f"the {name} split is empty (data.{name}_split={getattr(d, name + '_split')!r})")
        for what, column in needed:
            if column not in split.column_names:
                raise ValueError(
                    f"{what} is not a column of the {name} split (columns: {split.column_names})"
                )
            nulls = split.with_format("arrow")[column].null_count
            if nulls:
                raise ValueError(f"{what}: {nulls} row(s) of the {name} split have no value")
    if task == "token_cls":
        _check_word_tags(splits, d)
    if task in ("seq_cls", "token_cls"):
        return _label_names(splits, d)
    return None


def _template_fields(template: str | None) -> list[str]:
    if template is None:
        return []
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(f"data.prompt_template={template!r} is not a valid format string: {err}") from None
    if any(not f or f.isdigit() for f in fields):
        raise ValueError(f"data.prompt_template={template!r}: placeholders must name columns, e.g. {{text}}")
    return [f.split(".")[0].split("[")[0] for f in fields]


def _check_word_tags(splits: dict[str, Any], d: DataParams) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    for name, split in splits.items():
        tokens = split.with_format("arrow")[d.tokens_column]
        tags = split.with_format("arrow")[d.label_column]
        for field, column, values in (
            ("tokens_column", d.tokens_column, tokens),
            ("label_column", d.label_column, tags),
        ):
            if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
                raise ValueError(
                    f"data.{field}={column!r} must hold a list per row for token classification, got {values.type}"
                )
        mismatch = pc.not_equal(pc.list_value_length(tokens), pc.list_value_length(tags)).to_pylist()
        if True in mismatch:
            row = mismatch.index(True)
            raise ValueError(
                f"row {row} of the {name} split has {len(tokens[row])} words (data.tokens_column={d.tokens_column!r}) "
                f"but {len(tags[row])} tags (data.label_column={d.label_column!r})"
            )


def _label_names(splits: dict[str, Any], d: DataParams) -> list[str]:
    """The class names in id order; every label of every split must be one of them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    feature = splits["train"].features[d.label_column]
    feature = getattr(feature, "feature", feature)  # token_cls: the tag inside the list
    found: dict[str, set[Any]] = {}
    for name, split in splits.items():
        values = split.with_format("arrow")[d.label_column]
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            values = pc.list_flatten(values)
        if values.null_count:
            raise ValueError(
                f"data.label_column={d.label_column!r}: the {name} split has {values.null_count} null tag(s)"
            )
        found[name] = set(pc.unique(values).to_pylist())
    every = set().union(*found.values())
    if not every:
        raise ValueError(f"data.label_column={d.label_column!r} holds no labels")
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in every)
    if not ints and not all(isinstance(v, str) for v in every):
        kinds = sorted({type(v).__name__ for v in every})
        raise ValueError(f"data.label_column={d.label_column!r} must hold class names or ids, got {kinds}")
    names = d.label_names or getattr(feature, "names", None)
    if names is None:
        names = [str(i) for i in range(max(every) + 1)] if ints else sorted(every)
    allowed: set[Any] = set(range(len(names))) if ints else set(names)
    for name, labels in found.items():
        unknown = sorted(labels - allowed)
        if unknown:
            what = f"ids outside 0..{len(names) - 1}" if ints else "labels not in label_names"
            raise ValueError(
                f"the {name} split of data.label_column={d.label_column!r} has {what}: {unknown[:10]} "
                f"(label_names: {names})"
            )
    return list(names)


# -- tokenizing ------------------------------------------------------------------------------------
def _encoder(
    params: FinetuneParams, tokenizer: Any, label_names: list[str] | None, keep_raw: bool
) -> Callable[[Batch], Batch]:
    """The batched `map` function for params.model.task (keep_raw: add the raw text columns)."""
    d, task = params.data, params.model.task
    to_id = {name: i for i, name in enumerate(label_names or [])}
    target_column = d.target_column or ""  # set for generative tasks: _validate checked it

    def label_id(value: Any) -> int:
        return value if isinstance(value, int) else to_id[value]

    def seq_cls(batch: Batch) -> Batch:
        out = dict(tokenizer(batch[d.text_column], truncation=True, max_length=d.max_length))
        out["labels"] = [label_id(v) for v in batch[d.label_column]]
        if keep_raw:
            out["text"] = batch[d.text_column]
        return out

    def token_cls(batch: Batch) -> Batch:
        words = batch[d.tokens_column]
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=d.max_length)
        out = dict(enc)
        out["labels"] = [
            _align(enc.word_ids(i), [label_id(t) for t in tags])
            for i, tags in enumerate(batch[d.label_column])
        ]
        if keep_raw:
            out["tokens"] = words
            out["text"] = [" ".join(w) for w in words]
        return out

    def generative(batch: Batch) -> Batch:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        prompts = [
            d.prompt_template.format(**r) if d.prompt_template else str(r[d.text_column]) for r in rows
        ]
        targets = [str(r[target_column]) for r in rows]
        if task == "seq2seq_lm":
            out = dict(tokenizer(prompts, truncation=True, max_length=d.max_length))
            out["labels"] = tokenizer(text_target=targets, truncation=True, max_length=d.max_target_length)[
                "input_ids"
            ]
        else:
            out = _causal(tokenizer, prompts, targets, d.max_length)
        if keep_raw:
            out["prompt"], out["reference"] = prompts, targets
        return out

    return {"seq_cls": seq_cls, "token_cls": token_cls}.get(task, generative)


def _align(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """One label per token: the word's tag on its first sub-token, -100 on the rest and on specials."""
    out, previous = [], None
    for word in word_ids:
        out.append(-100 if word is None or word == previous else tags[word])
        previous = word
    return out


def _causal(tokenizer: Any, prompts: list[str], targets: list[str], max_length: int) -> Batch:
    """[bos] prompt target eos, labels -100 on [bos] and the prompt; prompt and target tokenized apart
    so the boundary is the one generation sees."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {tokenizer.name_or_path!r} has no eos token to end targets with")
    prefix = _special_prefix(tokenizer)
    budget = max_length - len(prefix)
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    out: Batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for prompt, target in zip(prompt_ids, target_ids):
        target = [*target, tokenizer.eos_token_id]
        if len(prompt) + len(target) > budget:
            keep_target = min(len(target), max(budget - len(prompt), budget // 2))
            target = target[:keep_target]
            prompt = prompt[len(prompt) - (budget - keep_target) :] if budget > keep_target else []
        ids = [*prefix, *prompt, *target]
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append([-100] * (len(prefix) + len(prompt)) + target)
    return out


def _special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts before text (e.g. Llama's bos; none for GPT-2)."""
    probe = tokenizer("hello")["input_ids"]
    bare = tokenizer("hello", add_special_tokens=False)["input_ids"]
    for start in range(len(probe) - len(bare) + 1):
        if probe[start : start + len(bare)] == bare:
            return list(probe[:start])
    return []


# -- small helpers ---------------------------------------------------------------------------------
def _hash(*parts: Any) -> str:
    return hashlib.sha256("\0".join("" if p is None else str(p) for p in parts).encode()).hexdigest()


def _count_tokens(column: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(column)).as_py() or 0)


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
