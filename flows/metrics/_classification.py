"""Shared helpers of the shipped classification metrics (precision, recall, f1).

Lives next to them so `evaluate.load` copies it along: their `from ._classification import ...`
is an evaluate "internal import" (one import per line, no other relative imports).
"""

from __future__ import annotations

from typing import Any

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
