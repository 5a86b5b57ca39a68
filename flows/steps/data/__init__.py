"""Tokenize step: load a dataset (Hub id or local files), validate it, tokenize it once, cache it.

Output: `cache_dir/<cache_key>/`, a `DatasetDict` saved with `save_to_disk` with splits "train",
"test" and, when the run has one, "validation", plus `peftflow_meta.json`. The modules:

- `load`: files or Hub / saved datasets, and the train / validation / test splits;
- `validate`: columns, labels, conversations — every check before any tokenizing;
- `format`: how one row becomes model input (templates, chat templates, loss masks, truncation),
  shared with evaluation;
- `encode`: the batched map functions per task;
- `cache`: the cache key and the atomic write.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

from flows.params import MEDIA_TASKS, FinetuneParams
from flows.steps import TokenizedData, file_sha256
from flows.steps.data import cache, encode, load, media, media_check, media_encode, validate
from flows.steps.data.format import RowFormat
from flows.steps.model import load_tokenizer

SPLITS = ("train", "validation", "test")


def tokenize(params: FinetuneParams, cache_dir: str) -> TokenizedData:
    """Tokenize params.data for params.model; reuse `cache_dir/<cache_key>/` when already done."""
    d = params.data
    local = load.local_files(d)
    # Local files are fingerprinted by their bytes, so a cache hit needs no parsing at all.
    fingerprint = _local_fingerprint(local) if local else ""
    source = _local_source(local)
    key = cache.cache_key(params, fingerprint) if local else ""
    if local and (hit := cache.cached(cache_dir, key)):
        return hit
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=cache_dir) as work:
        raw = load.load_local(local, d, os.path.join(work, "raw")) if local else load.load_hub(d)
        if not local:  # Hub datasets: the revision and the datasets fingerprints of what was loaded
            fingerprint, source = _hub_fingerprint(params, raw), _hub_source(params)
            key = cache.cache_key(params, fingerprint)
            if hit := cache.cached(cache_dir, key):
                return hit
        splits = load.select_splits(raw, d, params.train.seed, source)
        store = _Store(work, cache_dir, key, fingerprint, source)
        if params.model.task in MEDIA_TASKS:
            return _prepare_media(params, splits, store)
        label_names = validate.validate(splits, params)
        tokenizer = load_tokenizer(params)
        if params.model.task in ("causal_lm", "seq2seq_lm"):
            RowFormat(params, tokenizer)  # a missing chat template fails here, before any tokenizing
            splits = {name: _class_names_as_text(split, params) for name, split in splits.items()}
        counts: Counter[tuple[str, str]] = Counter()
        encoded = {
            name: split.map(
                encode.encoder(params, tokenizer, label_names, name, counts),
                batched=True,
                with_indices=True,
                remove_columns=split.column_names,
                cache_file_name=os.path.join(work, f"map-{name}.arrow"),
                load_from_cache_file=False,
                new_fingerprint=cache.digest(key, name)[:16],  # skips hashing the tokenizer
                desc=f"Tokenizing {name}",
            )
            for name, split in splits.items()
        }
        for name, split in encoded.items():
            if len(split) == 0:
                raise ValueError(
                    f"every row of the {name} split was dropped by data.truncation="
                    f"{d.truncation or 'the default'} (max_length={d.max_length}): raise data.max_length "
                    "or choose truncation left/right"
                )
        return _publish(
            params,
            store,
            encoded,
            label_names,
            # unpadded, so every token is a real one
            train_tokens=_count_tokens(encoded["train"].with_format("arrow")["input_ids"]),
            truncation={
                name: {status: counts[(name, status)] for status in ("truncated", "dropped")}
                for name in encoded
            },
        )


def _prepare_media(params: FinetuneParams, splits: dict[str, Any], store: _Store) -> TokenizedData:
    """Images and audio: every row decoded and checked first, then stored compactly (encoded bytes,
    label ids; the model's processor runs per batch in training and evaluation). No truncation applies."""
    from flows.steps.model import load_processor

    d = params.data
    # Relative file paths in the data resolve against the data file's folder (or the dataset folder).
    if d.train_file is not None:
        base_dir: str | None = os.path.dirname(os.path.abspath(d.train_file))
    else:
        base_dir = d.dataset if d.dataset is not None and os.path.isdir(d.dataset) else None
    splits = {name: media.undecoded(split, params) for name, split in splits.items()}
    label_names = media_check.check(splits, params, base_dir)
    processor = load_processor(params)
    encoded = {
        name: split.map(
            media_encode.encoder(params, getattr(processor, "tokenizer", None), label_names, name, base_dir),
            batched=True,
            batch_size=32,
            with_indices=True,
            remove_columns=split.column_names,
            cache_file_name=os.path.join(store.work, f"map-{name}.arrow"),
            load_from_cache_file=False,
            new_fingerprint=cache.digest(store.key, name)[:16],
            desc=f"Preparing {name}",
        )
        for name, split in splits.items()
    }
    return _publish(
        params,
        store,
        encoded,
        label_names,
        # asr: transcript tokens; images have none
        train_tokens=(
            _count_tokens(encoded["train"].with_format("arrow")["labels"])
            if params.model.task == "asr"
            else 0
        ),
        truncation={name: {"truncated": 0, "dropped": 0} for name in encoded},
    )


class _Store(NamedTuple):
    """Where and under which key the prepared splits go, and what they were made from."""

    work: str  # a temporary folder inside cache_dir
    cache_dir: str
    key: str
    fingerprint: str
    source: str


def _publish(
    params: FinetuneParams,
    store: _Store,
    encoded: dict[str, Any],
    label_names: list[str] | None,
    train_tokens: int,
    truncation: dict[str, dict[str, int]],
) -> TokenizedData:
    """Save the encoded splits with their `peftflow_meta.json` into the cache, atomically."""
    from datasets import DatasetDict

    meta = {
        "fingerprint": store.fingerprint,
        "cache_key": store.key,
        "task": params.model.task,
        "label_names": label_names,
        "num_train": len(encoded["train"]),
        "num_validation": len(encoded["validation"]) if "validation" in encoded else 0,
        "num_test": len(encoded["test"]),
        "num_train_tokens": train_tokens,
        "source": store.source,
        "truncation": truncation,
    }
    staged = os.path.join(store.work, "out")
    DatasetDict(encoded).save_to_disk(staged)
    return cache.publish(staged, store.cache_dir, store.key, meta)


def fingerprint(params: FinetuneParams) -> tuple[str, str]:
    """The raw data's fingerprint (what `tokenize` records as `TokenizedData.fingerprint`) and its
    source, without tokenizing: local files are hashed; a Hub dataset is loaded (from the datasets
    cache when it is there)."""
    local = load.local_files(params.data)
    if local:
        return _local_fingerprint(local), _local_source(local)
    return _hub_fingerprint(params, load.load_hub(params.data)), _hub_source(params)


def _local_fingerprint(local: dict[str, str]) -> str:
    return cache.digest(*(f"{split}={Path(p).name}:{file_sha256(p)}" for split, p in local.items()))


def _local_source(local: dict[str, str]) -> str:
    return ", ".join(f"{split}={os.path.abspath(p)}" for split, p in local.items())


def _hub_fingerprint(params: FinetuneParams, raw: Any) -> str:
    d = params.data
    return cache.digest(
        d.dataset, d.config_name, d.revision, d.data_dir, *(s._fingerprint for s in raw.values())
    )


def _hub_source(params: FinetuneParams) -> str:
    d = params.data
    where = f"/{d.config_name}" if d.config_name else f"/{d.data_dir}" if d.data_dir else ""
    return f"{d.dataset}{where}@{d.revision or 'main'}"


def _class_names_as_text(split: Any, params: FinetuneParams) -> Any:
    """A ClassLabel column that a generative run reads as text becomes its class names ("positive",
    not 2): targets and templates see names."""
    from datasets import ClassLabel, Value

    columns = [c for _, c in validate.needed_columns(params) if isinstance(split.features.get(c), ClassLabel)]
    for column in columns:
        feature, features = split.features[column], split.features.copy()
        features[column] = Value("string")
        split = split.map(
            lambda batch, c=column, f=feature: {c: f.int2str(batch[c])},
            batched=True,
            features=features,
            desc=f"Class names of {column}",
        )
    return split


def _count_tokens(column: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(column)).as_py() or 0)
