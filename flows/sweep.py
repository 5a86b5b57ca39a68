"""The `sweep` flow: a grid of `finetune` trials (methods × ranks × learning rates) under one MLflow run.

Each trial is the `finetune` flow as a subflow, nested in MLflow under the sweep's parent run. Trials
run one after another: they share the machine (and its one GPU). A failed trial is recorded and the
sweep goes on; the sweep fails only when every trial failed. Trials are ranked by a validation metric
(`grid.metric`, val_<name>); each row also shows the test metric of the same name, which plays no
part in picking the best trial. The parent run and the flow run both get the comparison: a table of
trials and a plot of the validation metric against the trainable-parameter share.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger

from flows.finetune import finetune, prefect_tags, preflight
from flows.params import FinetuneParams, SweepGrid
from flows.tracking import sweep as tracking

# Result keys of the shipped metrics whose names differ from the metric's (see flows/metrics).
_RESULT_KEYS = {
    "rouge": ("rouge1", "rouge2", "rougeL", "rougeLsum"),
    "bleu": ("bleu", *(f"bleu_precision_{n}" for n in range(1, 5)), "brevity_penalty", "length_ratio"),
    "seqeval": ("overall_precision", "overall_recall", "overall_f1", "overall_accuracy"),
}
_FLAGS = {"lora": (False, False), "dora": (True, False), "rslora": (False, True)}  # use_dora, use_rslora
_RANKLESS = ("ia3",)


@dataclass(frozen=True)
class Trial:
    index: int
    method: str
    r: int
    learning_rate: float
    params: FinetuneParams

    @property
    def name(self) -> str:
        return self.params.tracking.run_name or f"trial-{self.index}"


def trial_metrics(params: FinetuneParams) -> list[str]:
    """The validation metrics every trial of `params` logs: what a sweep can rank by."""
    names = [f"val_{key}" for m in params.eval.metrics for key in _RESULT_KEYS.get(m, (m,))]
    if params.train.eval_every != "no":  # val_loss comes from the evaluations during training
        names.append("val_loss")
    return names


def plan(params: FinetuneParams, grid: SweepGrid) -> list[Trial]:
    """Check the sweep and expand the grid into trials; raises ValueError before anything runs."""
    produced = trial_metrics(params)
    if grid.metric not in produced:
        raise ValueError(
            f"grid.metric={grid.metric!r} is not a metric the trials log; with eval.metrics="
            f"{params.eval.metrics} and train.eval_every={params.train.eval_every!r} use one of: "
            f"{', '.join(produced)}"
        )
    for name in ("methods", "ranks", "learning_rates"):
        values = getattr(grid, name)
        if len(set(values)) != len(values):
            raise ValueError(f"grid.{name}={values} repeats a value: the same trial would run twice")
    if params.data.has_validation_source() is False:
        raise ValueError(
            "a sweep ranks its trials on the validation split and this recipe has none: set "
            "data.validation_fraction (carved from train) or data.validation_file; the test split is never "
            "used to pick a trial"
        )
    if params.publish.repo_id:
        raise ValueError(
            f"publish.repo_id={params.publish.repo_id!r}: a sweep does not publish (every trial would push "
            "to the same repo); leave it empty and publish the best trial's adapter afterwards"
        )
    rates: list[float | None] = [*grid.learning_rates] or [None]  # None: each trial's own rate
    combos = [
        (method, r, lr)
        for method, r, lr in itertools.product(grid.methods, grid.ranks, rates)
        if method not in _RANKLESS or r == grid.ranks[0]  # one trial per learning rate: IA3 has no rank
    ]
    return [_trial(params, i, method, r, lr) for i, (method, r, lr) in enumerate(combos)]


def _peft_section(current: dict[str, Any], method: str, r: int) -> dict[str, Any]:
    """The trial's `peft`: the recipe's own fields when it uses the same method, else that method's
    defaults; the grid's rank goes to the method's size knob."""
    name = "lora" if method in _FLAGS else method
    peft: dict[str, Any] = dict(current) if current.get("method") == name else {"method": name}
    if method in _FLAGS:
        use_dora, use_rslora = _FLAGS[method]
        peft.update(r=r, use_dora=use_dora, use_rslora=use_rslora)
    elif method in ("loha", "lokr"):
        peft["r"] = r
    elif method == "adalora":
        peft.update(target_r=r, init_r=r + max(2, r // 2))  # the schedule prunes from init_r down to r
    elif method in ("prompt_tuning", "p_tuning", "prefix_tuning"):
        peft["num_virtual_tokens"] = r
    return peft


def _trial(params: FinetuneParams, index: int, method: str, r: int, lr: float | None) -> Trial:
    config = params.model_dump(mode="json")
    config["peft"] = _peft_section(config["peft"], method, r)
    if lr is not None:  # else the recipe's own, or the trial's method default (FinetuneParams.learning_rate)
        config["train"]["learning_rate"] = lr
    trial_params = FinetuneParams.model_validate(config)
    lr = trial_params.learning_rate
    named = trial_params.tracking.model_copy(
        update={
            "run_name": f"{method}-lr{lr:g}" if method in _RANKLESS else f"r{r}-{method}-lr{lr:g}",
            # The parent run id is filled in once the parent exists (see `_nested`).
            "tags": {**params.tracking.tags, tracking.TRIAL_TAG: str(index)},
        }
    )
    return Trial(index, method, r, lr, trial_params.model_copy(update={"tracking": named}))


def _nested(trial: Trial, parent_run_id: str) -> FinetuneParams:
    tags = {**trial.params.tracking.tags, tracking.PARENT_TAG: parent_run_id}
    return trial.params.model_copy(
        update={"tracking": trial.params.tracking.model_copy(update={"tags": tags})}
    )


@flow(name="sweep")
def sweep(params: FinetuneParams, grid: SweepGrid = SweepGrid()) -> dict[str, Any]:  # noqa: B008
    """Run every trial of `grid` on `params` as a nested MLflow run; returns the comparison and best trial."""
    logger = get_run_logger()
    trials = plan(params, grid)
    preflight(params)
    parent = tracking.start_parent(params, grid, tags=prefect_tags())
    errors: dict[int, str] = {}
    try:
        for trial in trials:
            logger.info("trial %d/%d: %s", trial.index + 1, len(trials), trial.name)
            try:
                finetune.with_options(flow_run_name=trial.name)(_nested(trial, parent))
            except Exception as exc:  # one bad trial must not end the sweep
                errors[trial.index] = f"{type(exc).__name__}: {exc}"[:1000]
                logger.warning("trial %s failed: %s", trial.name, errors[trial.index])
        rows = comparison_rows(trials, tracking.child_runs(parent), errors, grid.metric)
        best = best_row(rows, grid.metric, grid.direction)
        plotted = tracking.log_comparison(parent, rows, grid.metric, best)
    except BaseException:
        tracking.finish(parent, "FAILED")
        raise
    all_failed = len(errors) == len(trials)
    tracking.finish(parent, "FAILED" if all_failed else "FINISHED")
    summary = {
        "parent_run_id": parent,
        "metric": grid.metric,
        "direction": grid.direction,
        "trials": rows,
        "best": best,
        "mlflow_url": tracking.parent_url(parent),
    }
    _prefect_artifacts(summary, *tracking.plot_location(parent) if plotted else (None, None))
    if all_failed:
        raise RuntimeError(f"all {len(trials)} trials of the sweep failed; first error: {errors[0]}")
    return summary


def comparison_rows(
    trials: list[Trial], children: dict[int, tracking.ChildRun], errors: dict[int, str], metric: str
) -> list[dict[str, Any]]:
    """One row per trial, in grid order; a trial without a run or a metric has None there."""
    rows = []
    for trial in trials:
        child = children.get(trial.index)
        metrics = child.metrics if child else {}
        row = {
            "trial": trial.index,
            "run_name": trial.name,
            "method": trial.method,
            "r": trial.r,
            "learning_rate": trial.learning_rate,
            "status": "FAILED" if trial.index in errors else child.status if child else "MISSING",
            metric: metrics.get(metric),
        }
        if metric != "val_loss":  # the test metric of the same name, for the record: never used to rank
            row[_test_name(metric)] = metrics.get(_test_name(metric))
        row |= {
            "trainable_percent": metrics.get("trainable_percent"),
            "train_runtime_s": metrics.get("train_runtime_s"),
            "run_id": child.run_id if child else None,
            "error": errors.get(trial.index),
        }
        rows.append(row)
    return rows


def _test_name(metric: str) -> str:
    return "eval_" + metric.removeprefix("val_")


def best_row(rows: list[dict[str, Any]], metric: str, direction: str) -> dict[str, Any] | None:
    """The finished trial with the best metric value; ties go to the earlier trial."""
    scored = [
        row
        for row in rows
        if row["status"] == "FINISHED" and row[metric] is not None and math.isfinite(row[metric])
    ]
    if not scored:
        return None
    sign = 1 if direction == "maximize" else -1
    return max(scored, key=lambda row: (sign * row[metric], -row["trial"]))


def _prefect_artifacts(summary: dict[str, Any], plot_url: str | None, plot_location: str | None) -> None:
    """The comparison table, a link to the parent MLflow run, and the plot (or where it is)."""
    from prefect.artifacts import (
        create_image_artifact,
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    parent = summary["parent_run_id"]
    rows = [
        {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()} for row in summary["trials"]
    ]
    create_table_artifact(rows, key="sweep-comparison", description=f"Sweep trials, MLflow run {parent}")
    if summary["mlflow_url"]:
        create_link_artifact(summary["mlflow_url"], link_text="MLflow sweep run", key="mlflow-sweep-run")
    if plot_url:
        create_image_artifact(plot_url, key="sweep-plot", description=f"{summary['metric']} vs trainable %")
    else:
        text = (
            f"The comparison plot ({summary['metric']} vs trainable %) is the artifact `{tracking.PLOT_FILE}` "
            f"of MLflow run `{parent}`: `{plot_location}`"
            if plot_location
            else f"No trial logged {summary['metric']}: nothing to plot (MLflow run `{parent}`)."
        )
        create_markdown_artifact(text, key="sweep-plot")
