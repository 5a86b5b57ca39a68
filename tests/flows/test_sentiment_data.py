"""The shipped quickstart sentiment dataset: reproducible, balanced, disjoint splits, varied wording."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tools.sentiment import generate as ms

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "flows" / "data" / "sentiment"
LABELS = {"positive", "negative"}


def _rows(split: str) -> list[dict[str, str]]:
    with open(SHIPPED / f"{split}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def shipped() -> dict[str, list[dict[str, str]]]:
    return {split: _rows(split) for split in ("train", "test")}


def _run_generator(out_dir: Path, hash_seed: str) -> None:
    # A fresh interpreter per run with a different string-hash salt: the output must not depend on it.
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run(
        [sys.executable, "-m", "tools.sentiment.generate", "--out-dir", str(out_dir)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_generator_is_deterministic_and_matches_shipped_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _run_generator(a, "1")
    _run_generator(b, "2")
    for name in ("train.jsonl", "test.jsonl", "README.md"):
        first = (a / name).read_bytes()
        assert first == (b / name).read_bytes(), f"{name} differs between two generator runs"
        assert first == (SHIPPED / name).read_bytes(), (
            f"shipped {name} is stale: run `python -m tools.sentiment.generate` and commit the result"
        )


def test_write_leaves_no_temp_files(tmp_path: Path) -> None:
    ms.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "test.jsonl", "train.jsonl"]


def test_rows_have_text_and_a_known_label(shipped: dict[str, list[dict[str, str]]]) -> None:
    for rows in shipped.values():
        for row in rows:
            assert set(row) == {"text", "label"}
            assert row["label"] in LABELS
            assert row["text"] == row["text"].strip() and len(row["text"]) >= 4


def test_text_reads_as_finished_sentences(shipped: dict[str, list[dict[str, str]]]) -> None:
    """No unfilled placeholder, doubled space or lowercase sentence start leaks from the templates."""
    for rows in shipped.values():
        for row in rows:
            text = row["text"]
            assert "{" not in text and "}" not in text, text
            assert "  " not in text and ",," not in text and ".." not in text, text
            assert text[0].isupper() and text[-1] in ".!?", text
            assert not re.search(r"[.!?] [a-z]", text), text


def test_sizes(shipped: dict[str, list[dict[str, str]]]) -> None:
    assert len(shipped["train"]) + len(shipped["test"]) >= 1000
    assert len(shipped["test"]) >= 200
    assert len(shipped["train"]) >= 3 * len(shipped["test"])


def test_labels_are_balanced(shipped: dict[str, list[dict[str, str]]]) -> None:
    for split, rows in shipped.items():
        share = Counter(r["label"] for r in rows)["positive"] / len(rows)
        assert 0.45 <= share <= 0.55, f"{split}: {share:.3f} positive"


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", text.lower()).strip()


def test_no_duplicates_and_no_text_in_both_splits(shipped: dict[str, list[dict[str, str]]]) -> None:
    keys = {split: [_key(r["text"]) for r in rows] for split, rows in shipped.items()}
    for split, ks in keys.items():
        assert len(ks) == len(set(ks)), f"{split} has duplicates (ignoring case and punctuation)"
    assert not set(keys["train"]) & set(keys["test"])


def test_wording_is_diverse(shipped: dict[str, list[dict[str, str]]]) -> None:
    rows = shipped["train"] + shipped["test"]
    openings = {" ".join(r["text"].lower().split()[:3]) for r in rows}
    tokens = {w for r in rows for w in re.findall(r"[a-z']+", r["text"].lower())}
    lengths = [len(r["text"].split()) for r in rows]
    # Floors well below what the generator produces (about 560 openings, 1140 tokens): a template grid
    # or a shrunken lexicon would fall far under them.
    assert len(openings) >= 400, len(openings)
    assert len(tokens) >= 900, len(tokens)
    assert min(lengths) <= 4 and max(lengths) >= 30
    for label in LABELS:  # neither label may be a single template
        starts = {" ".join(r["text"].lower().split()[:2]) for r in rows if r["label"] == label}
        assert len(starts) >= 150, (label, len(starts))


def test_hard_cases_are_present_in_both_labels(shipped: dict[str, list[dict[str, str]]]) -> None:
    """Surface cues must mislead sometimes: praise words in negative reviews, negations in positive ones."""
    rows = shipped["train"] + shipped["test"]
    neg_with_praise = [
        r
        for r in rows
        if r["label"] == "negative" and re.search(r"\b(great|loved?|brilliant)\b", r["text"], re.I)
    ]
    pos_with_negation = [
        r for r in rows if r["label"] == "positive" and re.search(r"n't|\bnot\b|\bno\b", r["text"], re.I)
    ]
    assert len(neg_with_praise) >= 30
    assert len(pos_with_negation) >= 100


def test_test_split_uses_wording_training_never_saw(shipped: dict[str, list[dict[str, str]]]) -> None:
    train_vocab = {w for r in shipped["train"] for w in re.findall(r"[a-z']+", r["text"].lower())}
    unseen = [r for r in shipped["test"] if set(re.findall(r"[a-z']+", r["text"].lower())) - train_vocab]
    # Held-out fragments often reuse known words, so only a share of rows has a brand-new word.
    assert len(unseen) >= 0.1 * len(shipped["test"])
