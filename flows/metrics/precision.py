"""Precision: the fraction of positive predictions that are right (scikit-learn `precision_score`)."""

from __future__ import annotations

import evaluate
from sklearn.metrics import precision_score

from ._classification import SklearnScore


class Precision(SklearnScore, evaluate.Metric):
    """Classification precision."""

    score_name = "precision"
    score_fn = precision_score
    score_description = """
Precision is the fraction of predicted positives that are correct: TP / (TP + FP).
It lies in [0, 1]; higher is better. For more than two classes the per-class scores are averaged
(macro by default: see `average`).
"""
