"""Exact match: the fraction of predicted strings equal to their reference after normalisation."""

from __future__ import annotations

import re
import string
from typing import Any

import datasets
import evaluate

_DESCRIPTION = """
Exact match is the fraction of predictions that equal their reference string, after optional
normalisation (case, punctuation, digits, regexes, surrounding whitespace). With several
references per example, a prediction counts when it matches any of them. It lies in [0, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted texts.
    references (`list` of `str`, or `list` of `list` of `str`): one reference text per
        prediction, or several.
    regexes_to_ignore (`list` of `str`, optional): regular expressions whose matches are removed
        first, in order.
    ignore_case (`bool`, defaults to False): compare lowercased texts.
    ignore_punctuation (`bool`, defaults to False): drop ASCII punctuation (`string.punctuation`).
    ignore_numbers (`bool`, defaults to False): drop the digits 0-9.
    strip (`bool`, defaults to True): trim leading and trailing whitespace, which generated text
        often carries (" positive" after a prompt ending in ":").

Returns:
    exact_match (`float`): the fraction of predictions that match.

Example:
    >>> exact_match = evaluate.load("flows/metrics/exact_match.py")
    >>> exact_match.compute(predictions=["Paris", " rome "], references=["paris", "Rome"], ignore_case=True)
    {'exact_match': 1.0}
"""

_CITATION = """
@inproceedings{rajpurkar-etal-2016-squad,
  title={{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={Proceedings of the 2016 Conference on Empirical Methods in Natural Language Processing},
  pages={2383--2392},
  year={2016}
}
"""


class ExactMatch(evaluate.Metric):
    """String exact match with normalisation options."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
            ],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str] | list[list[str]],
        regexes_to_ignore: list[str] | None = None,
        ignore_case: bool = False,
        ignore_punctuation: bool = False,
        ignore_numbers: bool = False,
        strip: bool = True,
    ) -> dict[str, Any]:
        patterns = [re.compile(r) for r in regexes_to_ignore or []]
        dropped = (string.punctuation if ignore_punctuation else "") + (
            string.digits if ignore_numbers else ""
        )
        table = str.maketrans("", "", dropped)

        def norm(text: str) -> str:
            for pattern in patterns:
                text = pattern.sub("", text)
            if ignore_case:
                text = text.lower()
            text = text.translate(table)
            return text.strip() if strip else text

        if not predictions:
            raise ValueError("exact_match needs at least one prediction")
        hits = 0
        for prediction, reference in zip(predictions, references, strict=True):
            candidates = [reference] if isinstance(reference, str) else reference
            hits += norm(prediction) in {norm(c) for c in candidates}
        return {"exact_match": hits / len(predictions)}
