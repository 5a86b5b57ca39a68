"""Loading: local files or a Hub / saved dataset, then the train / validation / test splits.

Validation comes from `data.validation_file`, a split named `data.validation_split` (unless that
split is the test split), or
`data.validation_fraction` of the training rows carved off with the run's seed (the same rows on
every run with the same data and seed). The test split comes from `data.test_file`, a split named
`data.test_split`, or `data.test_fraction` carved from train first.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from flows.params import DataParams

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_FILE_FIELDS = (
    ("train_file", "train_split"),
    ("validation_file", "validation_split"),
    ("test_file", "test_split"),
)


def local_files(d: DataParams) -> dict[str, str]:
    """{split name: path} of the local data files, each checked to exist."""
    out: dict[str, str] = {}
    for field, split_field in _FILE_FIELDS:
        path = getattr(d, field)
        if path is None:
            continue
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"data.{field}={path!r} does not exist (working directory: {os.getcwd()})"
            )
        out[getattr(d, split_field)] = path
    return out


def load_local(files: dict[str, str], d: DataParams, cache_dir: str) -> Any:
    from datasets import DatasetDict, load_dataset

    fields = {getattr(d, split_field): field for field, split_field in _FILE_FIELDS}
    out = {}
    for split, path in files.items():
        where = f"data.{fields[split]}={path!r}"
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


def load_hub(d: DataParams) -> Any:
    from datasets import DatasetDict, load_dataset, load_from_disk

    assert d.dataset is not None  # DataParams guarantees a dataset or a train_file
    try:
        saved = any(os.path.isfile(os.path.join(d.dataset, f)) for f in ("dataset_dict.json", "state.json"))
        if saved:  # a directory written by save_to_disk
            loaded = load_from_disk(d.dataset)
        else:
            loaded = load_dataset(d.dataset, d.config_name, revision=d.revision, data_dir=d.data_dir)
    except Exception as err:
        raise ValueError(
            f"data.dataset={d.dataset!r} (config_name={d.config_name!r}, revision={d.revision!r}, "
            f"data_dir={d.data_dir!r}) could not be loaded: {type(err).__name__}: {err}"
        ) from None
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})


def select_splits(raw: Any, d: DataParams, seed: int, source: str) -> dict[str, Any]:
    """{"train", "test"} and, when there is one, "validation" (see the module docstring)."""
    available = sorted(raw.keys())
    if d.train_split not in raw:
        raise ValueError(
            f"data.train_split={d.train_split!r} is not a split of {source} (splits: {available})"
        )
    train = raw[d.train_split]
    if len(train) == 0:
        raise ValueError(f"split {d.train_split!r} of {source} is empty (data.train_split)")
    if d.test_split in raw:
        test = raw[d.test_split]
    elif d.test_fraction is None:
        raise ValueError(
            f"data.test_split={d.test_split!r} is not a split of {source} (splits: {available}); name one of "
            f"them, give data.test_file, or set data.test_fraction to carve the test split from train"
        )
    else:
        train, test = _carve(train, d.test_fraction, seed, "data.test_fraction")
    out = {"train": train, "test": test}
    # A split serving as the test split is never also the validation split.
    named = d.validation_split in raw and d.validation_split != d.test_split
    if d.validation_fraction is not None:
        if named:
            raise ValueError(
                f"{source} has a split named data.validation_split={d.validation_split!r} and "
                f"data.validation_fraction={d.validation_fraction} asks to carve another: unset one of them"
            )
        out["train"], out["validation"] = _carve(
            train, d.validation_fraction, seed, "data.validation_fraction"
        )
    elif named:
        out["validation"] = raw[d.validation_split]
    return {name: out[name] for name in ("train", "validation", "test") if name in out}


def _carve(train: Any, fraction: float, seed: int, what: str) -> tuple[Any, Any]:
    """(rest, carved): ceil(fraction × rows) rows drawn with `seed`; both parts must keep rows."""
    n = math.ceil(fraction * len(train))
    if n >= len(train):
        raise ValueError(
            f"{what}={fraction} of {len(train)} train rows leaves no train rows; use a smaller fraction or more data"
        )
    parts = train.train_test_split(test_size=n, seed=seed, shuffle=True)
    return parts["train"], parts["test"]
