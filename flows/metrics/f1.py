"""F1: the harmonic mean of precision and recall (scikit-learn `f1_score`)."""

from __future__ import annotations

import evaluate
from sklearn.metrics import f1_score

from ._classification import SklearnScore


class F1(SklearnScore, evaluate.Metric):
    """Classification F1."""

    score_name = "f1"
    score_fn = f1_score
    score_description = """
F1 is the harmonic mean of precision and recall: 2 * P * R / (P + R) = 2TP / (2TP + FP + FN).
It lies in [0, 1]; higher is better. For more than two classes the per-class scores are averaged
(macro by default: see `average`).
"""
