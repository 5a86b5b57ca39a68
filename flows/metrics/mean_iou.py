"""Mean intersection over union of segmentation masks, from one confusion matrix over the corpus."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np

from ._segmentation import confusion, scores

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


_CITATION = """
@article{everingham2010pascal,
  title={The Pascal Visual Object Classes (VOC) Challenge},
  author={Everingham, Mark and Van Gool, Luc and Williams, Christopher K. I. and Winn, John and Zisserman, Andrew},
  journal={International Journal of Computer Vision},
  volume={88},
  number={2},
  pages={303--338},
  year={2010}
}
"""


class MeanIou(evaluate.Metric):
    """Mean intersection over union."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
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
        counts = np.zeros((num_labels, num_labels), dtype=np.int64)  # [reference, prediction]
        for pred, ref in zip(predictions, references):
            counts += confusion(np.asarray(pred), np.asarray(ref), num_labels, ignore_index)
        return dict(scores(counts))
