"""The shipped metric modules: they load offline and agree with the libraries they wrap."""

from __future__ import annotations

import re
from pathlib import Path

import evaluate
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from seqeval import metrics as seqeval_metrics
from sklearn import metrics as sk

from flows.metrics import SHIPPED, check_metrics, compute_metrics, load_metric, metric_path

PREDS = [0, 1, 2, 2, 1, 0, 2, 1]
REFS = [0, 2, 2, 2, 1, 1, 0, 1]
BIN_PREDS = [1, 1, 0, 1, 0, 0, 1]
BIN_REFS = [1, 0, 0, 1, 1, 0, 1]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_module_loads_offline_from_its_file(name: str) -> None:
    metric = load_metric(name)
    assert isinstance(metric, evaluate.Metric)
    assert metric.name == name
    assert Path(metric_path(name)).is_file()
    info = metric._info()
    assert info.description.strip() and info.citation.strip() and info.inputs_description.strip()


@pytest.mark.parametrize("name", SHIPPED)
def test_module_has_one_import_per_line(name: str) -> None:
    # evaluate's loader reads `import a, b` as a package named "a," and reports it missing.
    for line in Path(metric_path(name)).read_text().splitlines():
        assert not re.match(r"^import\s+[^#]*,", line), line


def test_accuracy_matches_hand_count_and_sklearn() -> None:
    result = load_metric("accuracy").compute(predictions=PREDS, references=REFS)
    assert result == {"accuracy": 5 / 8}
    assert result["accuracy"] == sk.accuracy_score(REFS, PREDS)
    counted = load_metric("accuracy").compute(predictions=PREDS, references=REFS, normalize=False)
    assert counted == {"accuracy": 5.0}


@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_multiclass_averages_match_sklearn(name: str, average: str) -> None:
    fn = {"precision": sk.precision_score, "recall": sk.recall_score, "f1": sk.f1_score}[name]
    result = load_metric(name).compute(predictions=PREDS, references=REFS, average=average)
    assert result[name] == pytest.approx(fn(REFS, PREDS, average=average), abs=1e-12)


@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
def test_auto_average_is_binary_for_0_1_labels_and_macro_otherwise(name: str) -> None:
    fn = {"precision": sk.precision_score, "recall": sk.recall_score, "f1": sk.f1_score}[name]
    metric = load_metric(name)
    binary = metric.compute(predictions=BIN_PREDS, references=BIN_REFS)[name]
    assert binary == pytest.approx(fn(BIN_REFS, BIN_PREDS, average="binary"), abs=1e-12)
    macro = metric.compute(predictions=PREDS, references=REFS)[name]
    assert macro == pytest.approx(fn(REFS, PREDS, average="macro"), abs=1e-12)
    per_class = metric.compute(predictions=PREDS, references=REFS, average=None)[name]
    assert per_class == pytest.approx(list(fn(REFS, PREDS, average=None)), abs=1e-12)


def test_binary_scores_by_hand() -> None:
    # BIN: TP=3 (rows 0, 3, 6), FP=1 (row 1), FN=1 (row 4).
    assert load_metric("precision").compute(predictions=BIN_PREDS, references=BIN_REFS) == {"precision": 0.75}
    assert load_metric("recall").compute(predictions=BIN_PREDS, references=BIN_REFS) == {"recall": 0.75}
    assert load_metric("f1").compute(predictions=BIN_PREDS, references=BIN_REFS) == {"f1": 0.75}


def test_unknown_average_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="average='samples'"):
        load_metric("f1").compute(predictions=PREDS, references=REFS, average="samples")


def test_exact_match_normalisation_options() -> None:
    em = load_metric("exact_match")
    preds, refs = ["Paris", " rome ", "Year 2024!", "no"], ["paris", "Rome", "year", "yes"]
    assert em.compute(predictions=preds, references=refs) == {"exact_match": 0.0}
    assert em.compute(predictions=preds, references=refs, ignore_case=True) == {"exact_match": 0.5}
    options = {"ignore_case": True, "ignore_punctuation": True, "ignore_numbers": True}
    assert em.compute(predictions=preds, references=refs, **options) == {"exact_match": 0.75}
    assert em.compute(predictions=preds, references=refs, ignore_case=True, strip=False) == {
        "exact_match": 0.25
    }
    assert em.compute(predictions=["the cat"], references=["a cat"], regexes_to_ignore=[r"\b(a|the) "]) == {
        "exact_match": 1.0
    }
    # Several references: a prediction matching any of them counts.
    assert em.compute(predictions=["yes", "x"], references=[["no", "yes"], ["y"]]) == {"exact_match": 0.5}


def test_rouge_matches_rouge_score_and_hand_value() -> None:
    preds = ["the cat sat on the mat", "a quick brown fox\njumps high"]
    refs = ["the cat was on the mat", "the quick brown fox\njumped over it"]
    result = load_metric("rouge").compute(predictions=preds, references=refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        expected = sum(scorer.score(r, p)[kind].fmeasure for p, r in zip(preds, refs)) / 2
        assert result[kind] == pytest.approx(expected, abs=1e-12)
    # Unigrams: 3 of 3 predicted words are in the 4-word reference: P=1, R=3/4, F=6/7.
    one = load_metric("rouge").compute(
        predictions=["the cat sat"], references=["the cat sat down"], rouge_types=["rouge1"]
    )
    assert one == {"rouge1": pytest.approx(6 / 7, abs=1e-12)}
    best = load_metric("rouge").compute(
        predictions=["the cat sat"], references=[["dogs bark", "the cat sat down"]], rouge_types=["rouge1"]
    )
    assert best == one


def test_bleu_matches_sacrebleu_corpus_bleu() -> None:
    preds = ["the cat sat on the mat", "there is a dog in the garden today"]
    refs = [["the cat is on the mat", "a cat sat on the mat"], ["a dog is in the garden today"]]
    result = load_metric("bleu").compute(predictions=preds, references=refs)
    # sacrebleu takes one stream per reference position; None marks a missing second reference.
    expected = sacrebleu.corpus_bleu(preds, [[r[0] for r in refs], [refs[0][1], None]])
    assert result["bleu"] == pytest.approx(expected.score, abs=1e-9)
    assert [result[f"bleu_precision_{n}"] for n in range(1, 5)] == pytest.approx(
        expected.precisions, abs=1e-9
    )
    assert result["brevity_penalty"] == pytest.approx(expected.bp, abs=1e-12)
    single = load_metric("bleu").compute(
        predictions=["the cat sat on the mat"], references=["the cat sat on the mat"]
    )
    assert single["bleu"] == pytest.approx(100.0, abs=1e-9)


def test_seqeval_matches_seqeval_and_hand_values() -> None:
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]
    preds = [["B-PER", "I-PER", "O", "O"], ["O", "B-LOC", "O"]]
    result = load_metric("seqeval").compute(predictions=preds, references=refs)
    # Entities: PER(0:2) right; LOC(3) missed; LOC(1:3) predicted as LOC(1) = wrong span.
    assert result["overall_precision"] == 0.5  # 1 of 2 predicted entities
    assert result["overall_recall"] == pytest.approx(1 / 3, abs=1e-12)
    assert result["overall_f1"] == pytest.approx(seqeval_metrics.f1_score(refs, preds), abs=1e-12)
    assert result["overall_accuracy"] == pytest.approx(5 / 7, abs=1e-12)
    assert result["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert result["LOC"]["number"] == 2 and result["LOC"]["precision"] == 0.0


def test_combine_works_with_shipped_modules() -> None:
    clf = evaluate.combine([load_metric(n) for n in ("accuracy", "precision", "recall", "f1")])
    assert clf.compute(predictions=BIN_PREDS, references=BIN_REFS) == pytest.approx(
        {"accuracy": 5 / 7, "precision": 0.75, "recall": 0.75, "f1": 0.75}, abs=1e-12
    )
    text = evaluate.combine([load_metric("exact_match"), load_metric("rouge")])
    out = text.compute(predictions=["a b c", "x"], references=["a b c", "y"])
    assert out["exact_match"] == 0.5 and out["rouge1"] == 0.5


def test_unknown_metric_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ValueError, match=r"unknown metric 'no_such_metric'.*HF_HUB_OFFLINE.*accuracy, precision"
    ):
        check_metrics(["accuracy", "no_such_metric"])
    with pytest.raises(ValueError, match="Shipped metrics: accuracy"):
        load_metric("no_such_metric")
    with pytest.raises(ValueError, match="not shipped"):
        metric_path("no_such_metric")


def test_check_metrics_rejects_duplicates_and_task_mismatches() -> None:
    check_metrics(["accuracy", "f1"], task="seq_cls")
    check_metrics(["seqeval", "accuracy"], task="token_cls")
    check_metrics(["exact_match", "rouge", "bleu"], task="causal_lm")
    with pytest.raises(ValueError, match="twice"):
        check_metrics(["f1", "f1"])
    with pytest.raises(ValueError, match=r"'rouge' scores text.*seq_cls.*accuracy, precision, recall, f1"):
        check_metrics(["rouge"], task="seq_cls")
    with pytest.raises(ValueError, match="'accuracy' scores labels"):
        check_metrics(["accuracy"], task="seq2seq_lm")


def test_compute_metrics_flattens_and_picks_inputs_per_task() -> None:
    names = ["O", "B-PER", "I-PER"]
    preds, refs = [[1, 2, 0], [0, 1]], [[1, 2, 0], [0, 0]]
    out = compute_metrics(["seqeval", "accuracy"], "token_cls", preds, refs, names)
    tags_p = [[names[i] for i in r] for r in preds]
    tags_r = [[names[i] for i in r] for r in refs]
    assert out["overall_f1"] == pytest.approx(seqeval_metrics.f1_score(tags_r, tags_p), abs=1e-12)
    assert out["PER_number"] == 1.0 and out["PER_recall"] == 1.0
    assert out["accuracy"] == 4 / 5  # token-level, every labelled token counts once
    assert all(isinstance(v, float) for v in out.values())
    seq = compute_metrics(["f1"], "seq_cls", BIN_PREDS, BIN_REFS, ["neg", "pos"])
    assert seq == {"f1": 0.75}  # two classes: binary f1 of class 1
    three = compute_metrics(["f1"], "seq_cls", PREDS, REFS, ["a", "b", "c"])
    assert three["f1"] == pytest.approx(sk.f1_score(REFS, PREDS, average="macro"), abs=1e-12)
