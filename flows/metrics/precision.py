"""Precision: the fraction of positive predictions that are right (scikit-learn `precision_score`)."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
from sklearn.metrics import precision_score

from ._classification import AVERAGE_DOC, score

_DESCRIPTION = """
Precision is the fraction of predicted positives that are correct: TP / (TP + FP).
It lies in [0, 1]; higher is better. For more than two classes the per-class scores are averaged
(macro by default: see `average`).
"""

_KWARGS_DESCRIPTION = (
    """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): reference class ids."""
    + AVERAGE_DOC
    + """
Returns:
    precision (`float`, or `list` of `float` when `average=None`).

Example:
    >>> precision = evaluate.load("flows/metrics/precision.py")
    >>> precision.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1])  # auto: binary
    {'precision': 0.5}
"""
)

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and
          Grisel, O. and Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and
          Vanderplas, J. and Passos, A. and Cournapeau, D. and Brucher, M. and Perrot, M. and
          Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


class Precision(evaluate.Metric):
    """Classification precision."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.precision_score.html"
            ],
        )

    def _compute(
        self,
        predictions: list[int],
        references: list[int],
        average: str | None = "auto",
        labels: list[int] | None = None,
        pos_label: int = 1,
        sample_weight: list[float] | None = None,
        zero_division: float | str = 0.0,
    ) -> dict[str, Any]:
        return score(
            precision_score,
            "precision",
            predictions,
            references,
            average=average,
            labels=labels,
            pos_label=pos_label,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
