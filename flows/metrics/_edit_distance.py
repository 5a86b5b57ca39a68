"""Levenshtein distance between two sequences, and the error rate over a corpus (WER, CER)."""

from __future__ import annotations

from collections.abc import Sequence


def distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """The fewest substitutions, insertions and deletions turning `reference` into `hypothesis`."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def error_rate(pairs: list[tuple[Sequence[str], Sequence[str]]]) -> float:
    """Σ edits / Σ reference length over (reference, hypothesis) pairs (jiwer's corpus-level rate).

    An empty corpus of references scores 0.0 when every hypothesis is empty too, else 1.0 per unit.
    """
    edits = sum(distance(ref, hyp) for ref, hyp in pairs)
    total = sum(len(ref) for ref, _ in pairs)
    if total == 0:
        return 0.0 if edits == 0 else float(edits)
    return edits / total
