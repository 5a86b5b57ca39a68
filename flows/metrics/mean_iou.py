"""Mean intersection over union of segmentation masks, from one confusion matrix over the corpus."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Mean IoU scores semantic segmentation: for each class, the pixels both masks give that class
(intersection) divided by the pixels either gives it (union), counted over every image of the
corpus; the mean is over the classes that appear in the predictions or the references. Pixels whose
reference is `ignore_index` count nowhere. Also returned: mean per-class accuracy (recall) and
overall pixel accuracy. All lie in [0, 1]; higher is better.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): one predicted mask per image, flattened.
    references (`list` of `list` of `int`): the reference masks, flattened the same way.
    num_labels (`int`): the number of classes (ids 0 .. num_labels - 1).
    ignore_index (`int`, defaults to 255): the reference value of pixels that are not scored.

Returns:
    mean_iou (`float`), mean_accuracy (`float`), overall_accuracy (`float`).

Example:
    >>> metric = evaluate.load("flows/metrics/mean_iou.py")
    >>> metric.compute(predictions=[[0, 0, 1, 1]], references=[[0, 1, 1, 255]], num_labels=2)
    {'mean_iou': 0.5, 'mean_accuracy': 0.75, 'overall_accuracy': 0.6666666666666666}
"""


class MeanIoU(evaluate.Metric):
    """Mean intersection over union."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(
        self,
        predictions: list[list[int]],
        references: list[list[int]],
        num_labels: int,
        ignore_index: int = 255,
    ) -> dict[str, Any]:
        confusion = np.zeros((num_labels, num_labels), dtype=np.int64)  # [reference, prediction]
        for pred, ref in zip(predictions, references):
            p, r = np.asarray(pred, dtype=np.int64), np.asarray(ref, dtype=np.int64)
            if p.shape != r.shape:
                raise ValueError(f"a predicted mask has {p.size} pixels, its reference {r.size}")
            keep = r != ignore_index
            p, r = p[keep], r[keep]
            if r.size and (r.min() < 0 or r.max() >= num_labels or p.min() < 0 or p.max() >= num_labels):
                raise ValueError(
                    f"class ids must lie in 0..{num_labels - 1} (or be {ignore_index} in references)"
                )
            confusion += np.bincount(r * num_labels + p, minlength=num_labels**2).reshape(
                num_labels, num_labels
            )
        hits = np.diag(confusion).astype(np.float64)
        union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
        present = union > 0
        per_ref = confusion.sum(1)
        seen = per_ref > 0
        return {
            "mean_iou": float((hits[present] / union[present]).mean()) if present.any() else 0.0,
            "mean_accuracy": float((hits[seen] / per_ref[seen]).mean()) if seen.any() else 0.0,
            "overall_accuracy": float(hits.sum() / confusion.sum()) if confusion.sum() else 0.0,
        }
