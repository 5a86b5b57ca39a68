"""The tokenized-data cache: `cache_dir/<cache_key>/`, complete or absent.

`cache_key` hashes everything that shapes the tokenized output (the raw data's fingerprint, the
tokenizer's identity, the task, every data parameter that changes what is written, the chat
template's text, the seed that carves splits). A directory appears atomically (written aside, then
renamed), so one that exists is complete and is reused without tokenizing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from flows.params import FinetuneParams
from flows.steps import TokenizedData
from flows.steps.data.format import read_chat_template
from flows.steps.model import tokenizer_identity

FORMAT_VERSION = "3"  # bump when the tokenization changes what it writes
META = "peftflow_meta.json"
# Data parameters that do not change the tokenized output: where it comes from (the fingerprint
# covers the content) and how batches are built from it.
_NOT_SHAPING = {
    "dataset",
    "config_name",
    "revision",
    "data_dir",
    "train_file",
    "validation_file",
    "test_file",
    "packing",
}


def cache_key(params: FinetuneParams, fingerprint: str) -> str:
    shaping = {
        "format": FORMAT_VERSION,
        "data": fingerprint,
        "tokenizer": tokenizer_identity(params.model),
        "task": params.model.task,
        "params": params.data.model_dump(mode="json", exclude=_NOT_SHAPING),
        "chat_template": read_chat_template(params.data.chat_template),
        "seed": params.train.seed,
    }
    return digest(json.dumps(shaping, sort_keys=True))


def cached(cache_dir: str, key: str) -> TokenizedData | None:
    from datasets import load_from_disk

    final = os.path.join(cache_dir, key)
    if not os.path.isfile(os.path.join(final, META)):
        return None
    meta = json.loads(Path(final, META).read_text(encoding="utf-8"))
    splits = load_from_disk(final)
    meta["num_train"], meta["num_test"] = len(splits["train"]), len(splits["test"])
    meta["num_validation"] = len(splits["validation"]) if "validation" in splits else 0
    return TokenizedData(path=final, cached=True, **meta)


def publish(staged: str, cache_dir: str, key: str, meta: dict[str, Any]) -> TokenizedData:
    """Write the metadata next to the staged splits and move the directory into place."""
    Path(staged, META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    final = os.path.join(cache_dir, key)
    try:
        os.replace(staged, final)
    except OSError:
        if not os.path.isfile(os.path.join(final, META)):  # not a concurrent run that finished first
            raise
    return TokenizedData(path=final, cached=False, **meta)


def digest(*parts: Any) -> str:
    return hashlib.sha256("\0".join("" if p is None else str(p) for p in parts).encode()).hexdigest()
