"""Segmentation scores from a confusion matrix, which can be accumulated batch by batch."""

from __future__ import annotations

import numpy as np


def confusion(
    prediction: np.ndarray, reference: np.ndarray, num_labels: int, ignore_index: int
) -> np.ndarray:
    """The (reference, prediction) pixel counts of one or more masks; `ignore_index` pixels left out."""
    p, r = np.asarray(prediction, dtype=np.int64).ravel(), np.asarray(reference, dtype=np.int64).ravel()
    if p.shape != r.shape:
        raise ValueError(f"a predicted mask has {p.size} pixels, its reference {r.size}")
    keep = r != ignore_index
    p, r = p[keep], r[keep]
    if r.size and (r.min() < 0 or r.max() >= num_labels or p.min() < 0 or p.max() >= num_labels):
        raise ValueError(f"class ids must lie in 0..{num_labels - 1} (or be {ignore_index} in references)")
    return np.bincount(r * num_labels + p, minlength=num_labels**2).reshape(num_labels, num_labels)


def scores(counts: np.ndarray) -> dict[str, float]:
    """mean_iou (over the classes present in predictions or references), mean_accuracy (per-class
    recall over the classes present in references) and overall_accuracy (pixels right)."""
    hits = np.diag(counts).astype(np.float64)
    union = counts.sum(0) + counts.sum(1) - np.diag(counts)
    present = union > 0
    per_ref = counts.sum(1)
    seen = per_ref > 0
    total = counts.sum()
    return {
        "mean_iou": float((hits[present] / union[present]).mean()) if present.any() else 0.0,
        "mean_accuracy": float((hits[seen] / per_ref[seen]).mean()) if seen.any() else 0.0,
        "overall_accuracy": float(hits.sum() / total) if total else 0.0,
    }
