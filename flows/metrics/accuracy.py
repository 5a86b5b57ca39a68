"""Accuracy: the fraction of predictions equal to their reference (scikit-learn `accuracy_score`)."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
from sklearn.metrics import accuracy_score

from ._classification import SKLEARN_CITATION

_DESCRIPTION = """
Accuracy is the proportion of examples whose predicted class equals the reference class:
(number of correct predictions) / (number of predictions). It lies in [0, 1]; higher is better.
For imbalanced classes, read it next to precision, recall or F1.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): reference class ids.
    normalize (`bool`, defaults to True): return the fraction (True) or the count (False) of
        correct predictions.
    sample_weight (`list` of `float`, optional): one weight per example.

Returns:
    accuracy (`float`): the fraction (or count) of correct predictions.

Example:
    >>> accuracy = evaluate.load("flows/metrics/accuracy.py")
    >>> accuracy.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'accuracy': 0.75}
"""


class Accuracy(evaluate.Metric):
    """Classification accuracy."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=SKLEARN_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"
            ],
        )

    def _compute(
        self,
        predictions: list[int],
        references: list[int],
        normalize: bool = True,
        sample_weight: list[float] | None = None,
    ) -> dict[str, Any]:
        return {
            "accuracy": float(
                accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
            )
        }
