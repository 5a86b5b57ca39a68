"""ROUGE-1/2/L/Lsum F-measures (Google's `rouge-score` package), averaged over examples."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """
ROUGE compares a generated text with one or more references by their overlap: rouge1 and rouge2
count shared unigrams and bigrams, rougeL uses the longest common subsequence, and rougeLsum the
union of longest common subsequences over sentences (sentences are the newline-separated lines).
Each example gets the F-measure of the given type; the result is the mean over examples
(deterministic: no bootstrap resampling). With several references, an example scores against the
best one. Values lie in [0, 1].

The package's default tokenizer lowercases and keeps ASCII letters and digits only, so texts in
other scripts score 0 unless a `tokenizer` is passed.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated texts.
    references (`list` of `str`, or `list` of `list` of `str`): one reference text per
        prediction, or several.
    rouge_types (`list` of `str`, defaults to rouge1, rouge2, rougeL, rougeLsum): which scores.
    use_stemmer (`bool`, defaults to False): Porter-stem words before matching.
    tokenizer (object with a `tokenize(text) -> list[str]` method, optional): replaces the
        default tokenizer.

Returns:
    One `float` per requested type, e.g. {"rouge1": ..., "rouge2": ..., "rougeL": ..., "rougeLsum": ...}.

Example:
    >>> rouge = evaluate.load("flows/metrics/rouge.py")
    >>> rouge.compute(predictions=["the cat sat"], references=["the cat sat down"], rouge_types=["rouge1"])
    {'rouge1': 0.8571428571428571}
"""

_CITATION = """
@inproceedings{lin-2004-rouge,
  title={{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out},
  pages={74--81},
  year={2004},
  publisher={Association for Computational Linguistics}
}
"""

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class Rouge(evaluate.Metric):
    """Mean ROUGE F-measures."""

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
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013/"],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str] | list[list[str]],
        rouge_types: list[str] | None = None,
        use_stemmer: bool = False,
        tokenizer: Any = None,
    ) -> dict[str, Any]:
        types = list(rouge_types or ROUGE_TYPES)
        if not predictions:
            raise ValueError("rouge needs at least one prediction")
        scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer, tokenizer=tokenizer)
        totals = dict.fromkeys(types, 0.0)
        for prediction, reference in zip(predictions, references, strict=True):
            candidates = [reference] if isinstance(reference, str) else list(reference)
            scores = scorer.score_multi(candidates, prediction)
            for kind in types:
                totals[kind] += scores[kind].fmeasure
        return {kind: total / len(predictions) for kind, total in totals.items()}
