"""Word error rate: edits (substitutions + deletions + insertions) per reference unit, over the corpus."""

from __future__ import annotations

import evaluate

from ._edit_distance import EditRate

_DESCRIPTION = """
Word error rate of speech recognition (or any generated text): the Levenshtein distance between each
prediction and its reference counted in words (split on whitespace), summed over the corpus and divided
by the total reference length. 0 is perfect; lower is better; it can exceed 1 when predictions
insert much. Texts are compared as given, after lower-casing when `lowercase` (the default).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted transcripts.
    references (`list` of `str`): reference transcripts.
    lowercase (`bool`, defaults to True): compare lower-cased texts.

Returns:
    wer (`float`): the corpus Word error rate.

Example:
    >>> metric = evaluate.load("flows/metrics/wer.py")
    >>> metric.compute(predictions=["the cat sat"], references=["the cat sat down"])
    {'wer': 0.25}
"""


_CITATION = """
@article{levenshtein1966binary,
  title={Binary codes capable of correcting deletions, insertions, and reversals},
  author={Levenshtein, Vladimir I.},
  journal={Soviet Physics Doklady},
  volume={10},
  number={8},
  pages={707--710},
  year={1966}
}
"""


class Wer(EditRate, evaluate.Metric):
    """Word error rate."""

    result_key = "wer"
    texts = (_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    @staticmethod
    def units(text: str) -> list[str]:
        return text.split()
