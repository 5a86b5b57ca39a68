"""Entity-level precision, recall and F1 for token classification (the `seqeval` package)."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
from seqeval import scheme as schemes
from seqeval.metrics import accuracy_score, classification_report

_DESCRIPTION = """
seqeval scores sequence labelling (NER, chunking) by entities, not tokens: an entity counts as
correct only when its type and its whole span match the reference. Tags follow a scheme such as
IOB2 (B-PER, I-PER, O). Returns overall precision, recall and F1 over all entities (micro
average), the token-level accuracy, and precision/recall/F1/number per entity type.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): predicted tags, one list per sentence.
    references (`list` of `list` of `str`): reference tags, same lengths.
    suffix (`bool`, defaults to False): tags carry the type first (PER-B instead of B-PER).
    scheme (`str`, optional): "IOB1", "IOB2", "IOE1", "IOE2", "IOBES" or "BILOU"; read in
        strict mode only.
    mode (`str`, optional): "strict" counts only spans valid in `scheme` (needs `scheme`);
        the default is seqeval's lenient conlleval-compatible mode.
    sample_weight (`list` of `float`, optional): one weight per sentence.
    zero_division (`0`, `1` or `"warn"`, defaults to 0): the value of an undefined ratio.

Returns:
    overall_precision, overall_recall, overall_f1, overall_accuracy (`float`), and one dict per
    entity type: {"precision", "recall", "f1", "number"}.

Example:
    >>> seqeval = evaluate.load("flows/metrics/seqeval.py")
    >>> seqeval.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["overall_f1"]
    1.0
"""

_CITATION = """
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018}
}
@inproceedings{ramshaw-marcus-1995-text,
  title={Text Chunking using Transformation-Based Learning},
  author={Ramshaw, Lance and Marcus, Mitch},
  booktitle={Third Workshop on Very Large Corpora},
  year={1995}
}
"""


class Seqeval(evaluate.Metric):
    """seqeval entity-level scores."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            codebase_urls=["https://github.com/chakki-works/seqeval"],
            reference_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(
        self,
        predictions: list[list[str]],
        references: list[list[str]],
        suffix: bool = False,
        scheme: str | None = None,
        mode: str | None = None,
        sample_weight: list[float] | None = None,
        zero_division: int | str = 0,
    ) -> dict[str, Any]:
        scheme_cls = None
        if scheme is not None:
            # seqeval names each scheme by a class of seqeval.scheme (IOB2, IOBES, ...).
            scheme_cls = getattr(schemes, scheme, None)
            if not isinstance(scheme_cls, type):
                raise ValueError(f"scheme={scheme!r}: use IOB1, IOB2, IOE1, IOE2, IOBES or BILOU")
        report = classification_report(
            y_true=references,
            y_pred=predictions,
            suffix=suffix,
            output_dict=True,
            scheme=scheme_cls,
            mode=mode,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        out: dict[str, Any] = {}
        for name, row in report.items():
            if name in ("micro avg", "macro avg", "weighted avg"):
                continue
            out[name] = {
                "precision": float(row["precision"]),
                "recall": float(row["recall"]),
                "f1": float(row["f1-score"]),
                "number": int(row["support"]),
            }
        micro = report["micro avg"]
        out["overall_precision"] = float(micro["precision"])
        out["overall_recall"] = float(micro["recall"])
        out["overall_f1"] = float(micro["f1-score"])
        out["overall_accuracy"] = float(accuracy_score(y_true=references, y_pred=predictions))
        return out
