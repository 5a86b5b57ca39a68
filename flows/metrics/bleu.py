"""Corpus BLEU computed by `sacrebleu` (0-100 scale, the number papers report)."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
from sacrebleu.metrics import BLEU

_DESCRIPTION = """
BLEU scores a corpus of generated texts by the geometric mean of its modified 1- to 4-gram
precisions against the references, times a brevity penalty for output shorter than the
references. sacrebleu fixes the tokenization (13a by default) so that scores are comparable.
Scores are on sacrebleu's 0-100 scale; higher is better. It is a corpus-level metric: the mean of
per-sentence BLEU is a different (and noisier) number.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated texts.
    references (`list` of `str`, or `list` of `list` of `str`): one reference text per
        prediction, or several (the count may vary from example to example).
    tokenize (`str`, defaults to "13a"): sacrebleu tokenizer ("13a", "intl", "zh", "ja-mecab",
        "char", "none", ...).
    lowercase (`bool`, defaults to False): case-insensitive BLEU.
    smooth_method (`str`, defaults to "exp"): "none", "floor", "add-k" or "exp".
    smooth_value (`float`, optional): the value for the "floor" and "add-k" methods.
    use_effective_order (`bool`, defaults to False): ignore n-gram orders with no matches
        possible (for short texts).

Returns:
    bleu (`float`): corpus BLEU, 0-100.
    bleu_precision_1 ... bleu_precision_4 (`float`): modified n-gram precisions, 0-100.
    brevity_penalty (`float`): in (0, 1].
    length_ratio (`float`): generated length / reference length, in tokens.

Example:
    >>> bleu = evaluate.load("flows/metrics/bleu.py")
    >>> bleu.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])["bleu"]
    100.00000000000004
"""

_CITATION = """
@inproceedings{papineni-etal-2002-bleu,
  title={{B}leu: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics},
  pages={311--318},
  year={2002}
}
@inproceedings{post-2018-call,
  title={A Call for Clarity in Reporting {BLEU} Scores},
  author={Post, Matt},
  booktitle={Proceedings of the Third Conference on Machine Translation: Research Papers},
  pages={186--191},
  year={2018}
}
"""


class Bleu(evaluate.Metric):
    """sacrebleu corpus BLEU."""

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
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/P02-1040/", "https://aclanthology.org/W18-6319/"],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str] | list[list[str]],
        tokenize: str = "13a",
        lowercase: bool = False,
        smooth_method: str = "exp",
        smooth_value: float | None = None,
        use_effective_order: bool = False,
    ) -> dict[str, Any]:
        if not predictions:
            raise ValueError("bleu needs at least one prediction")
        per_example = [[r] if isinstance(r, str) else list(r) for r in references]
        if len(per_example) != len(predictions):
            raise ValueError(f"bleu got {len(predictions)} predictions but {len(per_example)} references")
        # sacrebleu wants one stream per reference position; None marks a missing reference.
        width = max(len(refs) for refs in per_example)
        streams = [[refs[i] if i < len(refs) else None for refs in per_example] for i in range(width)]
        scorer = BLEU(
            tokenize=tokenize,
            lowercase=lowercase,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            effective_order=use_effective_order,
        )
        # sacrebleu documents None as a missing reference but annotates only str.
        result = scorer.corpus_score(list(predictions), streams)  # type: ignore[arg-type]
        out: dict[str, Any] = {"bleu": float(result.score)}
        out.update({f"bleu_precision_{n}": float(p) for n, p in enumerate(result.precisions, start=1)})
        out["brevity_penalty"] = float(result.bp)
        out["length_ratio"] = float(result.ratio)
        return out
