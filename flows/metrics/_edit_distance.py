"""Levenshtein distance between two sequences, and the error rate over a corpus (WER, CER)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate


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


class EditRate:
    """`_info` and `_compute` of a corpus edit rate, mixed into a metric module's `evaluate.Metric`.

    The metric class sets `result_key`, `texts` (its module's description, citation and inputs
    description) and `units` (how a whitespace-normalised text splits: words, characters). Not an
    `evaluate.Metric` itself, so `evaluate.load` finds the module's own class, not this one.
    """

    result_key: str
    texts: tuple[str, str, str]

    @staticmethod
    def units(text: str) -> list[str]:
        raise NotImplementedError

    def _info(self) -> evaluate.MetricInfo:
        description, citation, inputs_description = self.texts
        return evaluate.MetricInfo(
            description=description,
            citation=citation,
            inputs_description=inputs_description,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(
        self, predictions: list[str], references: list[str], lowercase: bool = True
    ) -> dict[str, Any]:
        def units(text: str) -> list[str]:
            return self.units(" ".join((text.lower() if lowercase else text).split()))

        return {self.result_key: error_rate([(units(r), units(p)) for p, r in zip(predictions, references)])}
