"""Metric modules shipped with the project, loadable offline with `evaluate.load(path)`.

Each `<name>.py` here is an `evaluate.Metric` wrapping a well-kept library (scikit-learn,
rouge-score, sacrebleu, seqeval). `evaluate.load("accuracy")` would fetch its module from the Hub;
`load_metric("accuracy")` loads ours from this folder instead, so runs work without a network.
Other names still go to `evaluate.load` (a Hub id or a local metric script).

evaluate copies a local module into its dynamic-modules cache (`HF_MODULES_CACHE`, by default
~/.cache/huggingface/modules/evaluate_modules/metrics/<name>/<content hash>/) and imports it from
there; it parses the script's import lines with a regex to check for missing packages, so the
modules keep one import per line (`import a, b` would be read as a package named "a,").

This package imports `evaluate` only inside functions: `import flows.metrics` stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evaluate import EvaluationModule

_HERE = Path(__file__).resolve().parent

# What each shipped metric consumes: class ids, per-token tag sequences, or texts.
METRIC_INPUTS: dict[str, str] = {
    "accuracy": "labels",
    "precision": "labels",
    "recall": "labels",
    "f1": "labels",
    "exact_match": "text",
    "rouge": "text",
    "bleu": "text",
    "seqeval": "tags",
    "wer": "text",
    "cer": "text",
    "mean_iou": "masks",
}
# Scored from the model's own token losses by the evaluate step, not by an evaluate module:
# perplexity = exp(mean loss over the target tokens of the split), for the generative tasks.
MODEL_METRICS: dict[str, tuple[str, ...]] = {"perplexity": ("causal_lm", "seq2seq_lm")}
SHIPPED: tuple[str, ...] = tuple(METRIC_INPUTS)  # the evaluate modules in this folder

# What each task's evaluation can hand a metric (token_cls: per-token ids for the classification
# metrics, tag-name sequences for seqeval).
TASK_INPUTS: dict[str, tuple[str, ...]] = {
    "seq_cls": ("labels",),
    "token_cls": ("tags", "labels"),
    "causal_lm": ("text",),
    "seq2seq_lm": ("text",),
    "image_cls": ("labels",),
    "semantic_seg": ("masks",),
    "asr": ("text",),
}

_TRUE = {"1", "ON", "YES", "TRUE"}


def metric_path(name: str) -> str:
    """Absolute path of the shipped module `name` (e.g. ".../flows/metrics/f1.py").

    Raises:
        ValueError: `name` is not a shipped metric.
    """
    if name not in METRIC_INPUTS:
        raise ValueError(f"metric {name!r} is not shipped; shipped metrics: {', '.join(SHIPPED)}")
    return str(_HERE / f"{name}.py")


def hub_offline() -> bool:
    """True when the environment forbids Hub access (HF_HUB_OFFLINE or HF_EVALUATE_OFFLINE)."""
    return any(os.environ.get(var, "").upper() in _TRUE for var in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE"))


def load_metric(name: str, **init_kwargs: Any) -> EvaluationModule:
    """Load a metric: the shipped module when `name` is one, else `evaluate.load(name)`.

    Shipped modules keep their inputs in memory (no Arrow cache files, no file locks shared
    between processes). `init_kwargs` go to `evaluate.load` (e.g. `experiment_id`).

    Raises:
        ValueError: `name` is not shipped and evaluate cannot load it (offline, Hub unreachable,
            or no such module); the message lists the shipped names.
    """
    import evaluate

    if name in METRIC_INPUTS:
        init_kwargs.setdefault("keep_in_memory", True)
        return evaluate.load(metric_path(name), **init_kwargs)
    try:
        return evaluate.load(name, **init_kwargs)
    except (
        OSError,
        ImportError,
        ConnectionError,
    ) as err:  # FileNotFoundError and offline errors are OSErrors
        raise ValueError(_unknown_message(name, err)) from err


def check_metrics(names: Iterable[str], task: str | None = None) -> None:
    """Validate metric names before any training starts.

    Shipped names are checked against `task` (a text metric cannot score class ids). Any other name
    is loaded once with `evaluate.load`, which uses evaluate's cache when offline; failing that it is
    an error rather than a crash after training.

    Args:
        names: metric names, e.g. `params.eval.metrics`.
        task: the pipeline task ("seq_cls", "token_cls", "causal_lm", "seq2seq_lm"), optional.

    Raises:
        ValueError: a duplicate name, a shipped metric that does not fit `task`, or an unknown name.
    """
    names = list(names)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"eval.metrics lists {name!r} twice: {names}")
        seen.add(name)
    if task is not None and task not in TASK_INPUTS:
        raise ValueError(f"task={task!r}: use one of {', '.join(TASK_INPUTS)}")
    for name in names:
        if name in MODEL_METRICS:
            if task is not None and task not in MODEL_METRICS[name]:
                raise ValueError(f"metric {name!r} scores a language model; task {task!r} is not one")
        elif name in METRIC_INPUTS:
            if task is not None and METRIC_INPUTS[name] not in TASK_INPUTS[task]:
                fitting = [m for m, kind in METRIC_INPUTS.items() if kind in TASK_INPUTS[task]]
                raise ValueError(
                    f"metric {name!r} scores {METRIC_INPUTS[name]} but task {task!r} predicts "
                    f"{' / '.join(TASK_INPUTS[task])}; use one of: {', '.join(fitting)}"
                )
        else:
            load_metric(name)


def _unknown_message(name: str, err: BaseException) -> str:
    where = (
        "the Hub is disabled (HF_HUB_OFFLINE=1) and evaluate has no cached copy"
        if hub_offline()
        else f"evaluate could not load it from the Hub or a local path ({type(err).__name__}: {err})"
    )
    known = ", ".join((*SHIPPED, *MODEL_METRICS))
    return f"unknown metric {name!r}: it is not shipped and {where}. Shipped metrics: {known}"


def compute_metrics(
    names: Iterable[str],
    task: str,
    predictions: list[Any],
    references: list[Any],
    label_names: list[str] | None = None,
) -> dict[str, float]:
    """Score predictions with each named metric; one flat dict of floats.

    Args:
        names: metric names (shipped or loadable by `evaluate.load`).
        task: the pipeline task; picks what each metric is handed.
        predictions: seq_cls: class ids; token_cls: one list of tag ids per example (labelled
            positions only); causal_lm / seq2seq_lm: texts.
        references: the same shape as `predictions`.
        label_names: class or tag names in id order (token_cls: required for seqeval).

    Returns:
        e.g. {"accuracy": 0.9, "f1": 0.88}. Nested results are flattened with "_"
        ({"PER": {"f1": ...}} → "PER_f1"), lists get their index ("f1_0"), non-numbers are dropped,
        and a key two metrics share is prefixed with the metric's name.

    For precision / recall / f1 on seq_cls, two classes mean binary scores of class 1 (the
    positive class, as in `label_names[1]`); more classes, or token_cls, mean macro averages.
    """
    out: dict[str, float] = {}
    for name in names:
        if name in MODEL_METRICS:  # scored from token losses by the evaluate step
            continue
        kind = METRIC_INPUTS.get(name, TASK_INPUTS[task][0])
        preds, refs = _as_inputs(kind, task, predictions, references, label_names)
        kwargs: dict[str, Any] = {}
        if name in ("precision", "recall", "f1"):
            binary = task in ("seq_cls", "image_cls") and label_names is not None and len(label_names) == 2
            kwargs["average"] = "binary" if binary else "macro"
        if name == "mean_iou":
            if not label_names:
                raise ValueError("mean_iou needs label_names (the class names in id order)")
            kwargs["num_labels"] = len(label_names)
        result = load_metric(name).compute(predictions=preds, references=refs, **kwargs) or {}
        for key, value in _flatten(result).items():
            out[f"{name}_{key}" if key in out else key] = value
    return out


def _as_inputs(
    kind: str, task: str, predictions: list[Any], references: list[Any], label_names: list[str] | None
) -> tuple[list[Any], list[Any]]:
    if task != "token_cls":
        return predictions, references
    if kind == "tags":
        if not label_names:
            raise ValueError("token_cls metrics on tags need label_names (the tag names in id order)")
        return (
            [[label_names[i] for i in row] for row in predictions],
            [[label_names[i] for i in row] for row in references],
        )
    # Token-level classification metrics: every labelled token is one example.
    return [i for row in predictions for i in row], [i for row in references for i in row]


def _flatten(result: dict[Any, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
            value = value.tolist()
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}_"))
        elif isinstance(value, list | tuple):
            flat.update(_flatten({str(i): v for i, v in enumerate(value)}, f"{name}_"))
        elif isinstance(value, int | float):  # bool is an int: True -> 1.0
            flat[name] = float(value)
    return flat
