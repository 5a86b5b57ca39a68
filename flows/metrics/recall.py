"""Recall: the fraction of positive references that are found (scikit-learn `recall_score`)."""

from __future__ import annotations

import evaluate
from sklearn.metrics import recall_score

from ._classification import SklearnScore


class Recall(SklearnScore, evaluate.Metric):
    """Classification recall."""

    score_name = "recall"
    score_fn = recall_score
    score_description = """
Recall is the fraction of actual positives that are found: TP / (TP + FN).
It lies in [0, 1]; higher is better. For more than two classes the per-class scores are averaged
(macro by default: see `average`).
"""
