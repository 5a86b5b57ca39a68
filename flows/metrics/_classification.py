"""Shared parts of the shipped classification metrics (precision, recall, f1).

Lives next to them so `evaluate.load` copies it along: their `from ._classification import ...`
is an evaluate "internal import" (one import per line, no other relative imports).
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy

AVERAGES = ("auto", "binary", "macro", "micro", "weighted", None)

AVERAGE_DOC = """
    average (`str` or `None`, defaults to `"auto"`): how per-class scores are combined.
        - `"auto"`: `"binary"` when every label is 0 or 1, else `"macro"`.
        - `"binary"`: the score of the `pos_label` class only.
        - `"macro"`: unweighted mean over classes.
        - `"micro"`: computed from the global counts of true/false positives and negatives.
        - `"weighted"`: mean over classes weighted by their number of references.
        - `None`: the per-class scores, as a list.
    labels (`list` of `int`, optional): the classes to include (and their order when `average=None`).
    pos_label (`int`, defaults to 1): the positive class when `average="binary"`.
    sample_weight (`list` of `float`, optional): one weight per example.
    zero_division (`float` or `"warn"`, defaults to 0.0): the value of an undefined ratio
        (a class never predicted or never present).
"""


def resolve_average(average: str | None, predictions: Any, references: Any) -> str | None:
    """The sklearn `average` for `average`; "auto" is binary for 0/1 labels, else macro."""
    if average not in AVERAGES:
        raise ValueError(f"average={average!r}: use one of {', '.join(map(repr, AVERAGES))}")
    if average != "auto":
        return average
    seen = set(numpy.unique(numpy.asarray(predictions))) | set(numpy.unique(numpy.asarray(references)))
    return "binary" if seen <= {0, 1} else "macro"


def score(
    fn: Any,
    name: str,
    predictions: Any,
    references: Any,
    average: str | None = "auto",
    labels: list[int] | None = None,
    pos_label: int = 1,
    sample_weight: list[float] | None = None,
    zero_division: float | str = 0.0,
) -> dict[str, Any]:
    """`{name: fn(references, predictions, ...)}` with a float, or a list of floats for average=None."""
    value = fn(
        references,
        predictions,
        labels=labels,
        pos_label=pos_label,
        average=resolve_average(average, predictions, references),
        sample_weight=sample_weight,
        zero_division=zero_division,
    )
    if numpy.ndim(value) == 0:
        return {name: float(value)}
    return {name: [float(v) for v in value]}


SKLEARN_CITATION = """
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


def inputs_doc(name: str) -> str:
    """The `inputs_description` of a score metric called `name`."""
    return (
        """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): reference class ids."""
        + AVERAGE_DOC
        + f"""
Returns:
    {name} (`float`, or `list` of `float` when `average=None`).

Example:
    >>> {name} = evaluate.load("flows/metrics/{name}.py")
    >>> {name}.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1])  # auto: binary
    {{'{name}': 0.5}}
"""
    )


class SklearnScore:
    """`_info` and `_compute` of a metric that wraps one scikit-learn score function.

    Not an `evaluate.Metric` itself, so evaluate's loader still finds each module's own class.
    Subclasses set `score_name`, `score_fn` and `score_description`.
    """

    score_name: str
    score_fn: Any
    score_description: str

    def _info(self) -> Any:
        import evaluate

        return evaluate.MetricInfo(
            description=self.score_description,
            citation=SKLEARN_CITATION,
            inputs_description=inputs_doc(self.score_name),
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                f"https://scikit-learn.org/stable/modules/generated/sklearn.metrics.{self.score_name}_score.html"
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
            type(self).score_fn,
            self.score_name,
            predictions,
            references,
            average=average,
            labels=labels,
            pos_label=pos_label,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
