"""The shipped wer, cer and mean_iou modules: values worked out by hand, and their refusals."""

from __future__ import annotations

import numpy as np
import pytest

from flows.metrics import check_metrics, compute_metrics, load_metric


def test_wer_and_cer_count_edits_per_reference_unit_over_the_corpus() -> None:
    # "the cat sat down" → "the bat sat": 1 substitution + 1 deletion over 4 words; "a b" → "a b c":
    # 1 insertion over 2 words. Corpus: 3 edits / 6 words.
    predictions, references = ["the bat sat", "a b c"], ["the cat sat down", "a b"]
    assert load_metric("wer").compute(predictions=predictions, references=references) == {"wer": 0.5}
    # Characters: "abcd" → "abd" (1 deletion), "xy" → "XY" (case folded: 0) over 6 characters.
    cer = load_metric("cer").compute(predictions=["abd", "XY"], references=["abcd", "xy"])
    assert cer == {"cer": pytest.approx(1 / 6)}
    cased = load_metric("cer").compute(predictions=["XY"], references=["xy"], lowercase=False)
    assert cased == {"cer": 1.0}
    assert compute_metrics(["wer", "cer"], "asr", ["hello world"], ["hello world"]) == {
        "wer": 0.0,
        "cer": 0.0,
    }


def test_mean_iou_from_the_confusion_of_all_masks() -> None:
    pred = np.array([[0, 0], [1, 1]])
    ref = np.array([[0, 1], [1, 255]])  # the 255 pixel is not scored
    out = compute_metrics(
        ["mean_iou"], "semantic_seg", [pred.ravel().tolist()], [ref.ravel().tolist()], ["a", "b"]
    )
    # class 0: 1 hit, union 2 → 0.5; class 1: 1 hit, union 2 → 0.5; pixel accuracy 2 of 3.
    assert out == {"mean_iou": 0.5, "mean_accuracy": 0.75, "overall_accuracy": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match=r"class ids must lie in 0\.\.1"):
        compute_metrics(["mean_iou"], "semantic_seg", [[2]], [[0]], ["a", "b"])


def test_metrics_are_checked_against_the_media_tasks() -> None:
    check_metrics(["accuracy", "f1"], "image_cls")
    check_metrics(["wer", "cer"], "asr")
    check_metrics(["mean_iou"], "semantic_seg")
    with pytest.raises(ValueError, match="metric 'wer' scores text but task 'image_cls'"):
        check_metrics(["wer"], "image_cls")
    with pytest.raises(ValueError, match="metric 'accuracy' scores labels but task 'asr'"):
        check_metrics(["accuracy"], "asr")
