"""MLflow side of a `sweep`: the parent run, its nested trial runs, and the comparison artifacts.

A trial is an ordinary `finetune` run whose `mlflow.parentRunId` tag names the parent, which is how the
MLflow UI nests it; `sweep.trial` holds its index in the grid. The parent holds the grid (tags and
params), the comparison (`comparison.json` as an MLflow table, `comparison.csv`, `comparison.png`) and
the best trial (`best_<metric>`, `best_run_id`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from flows.params import FinetuneParams, SweepGrid
from flows.tracking import _client, ensure_experiment, run_url, tracking_uri

PARENT_TAG = MLFLOW_PARENT_RUN_ID
TRIAL_TAG = "sweep.trial"
PLOT_FILE = "comparison.png"


@dataclass(frozen=True)
class ChildRun:
    """What the comparison needs from one trial's MLflow run."""

    run_id: str
    status: str
    metrics: dict[str, float]


def start_parent(params: FinetuneParams, grid: SweepGrid, tags: dict[str, str | None]) -> str:
    """Create the parent run in `params.tracking.experiment`; returns its run id."""
    client = _client()
    name = params.tracking.experiment
    experiment_id = ensure_experiment(client, name)
    grid_values = grid.model_dump(mode="json")
    all_tags = {
        "sweep.grid": json.dumps(grid_values, sort_keys=True),
        "sweep.metric": grid.metric,
        "sweep.direction": grid.direction,
        "task": params.model.task,
        **tags,
        **params.tracking.tags,
    }
    run = client.create_run(
        experiment_id,
        run_name=params.tracking.run_name or "sweep",
        tags={k: str(v) for k, v in all_tags.items() if v},
    )
    run_id: str = run.info.run_id
    for key, value in grid_values.items():
        client.log_param(run_id, f"sweep.{key}", json.dumps(value) if isinstance(value, list) else value)
    client.log_text(run_id, params.to_yaml(), "base_params.yaml")
    return run_id


def child_runs(parent_run_id: str) -> dict[int, ChildRun]:
    """The parent's trial runs by trial index (a trial that failed before its run opened has none)."""
    client = _client()
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    )
    return {
        int(run.data.tags[TRIAL_TAG]): ChildRun(run.info.run_id, run.info.status, dict(run.data.metrics))
        for run in runs
        if TRIAL_TAG in run.data.tags
    }


def log_comparison(
    parent_run_id: str, rows: list[dict[str, Any]], metric: str, best: dict[str, Any] | None
) -> bool:
    """The comparison table (JSON table + CSV), the plot, and the best trial on the parent run.

    Returns whether the plot was logged: it needs one trial with the metric.
    """
    client = _client()
    columns = list(rows[0]) if rows else []
    client.log_table(parent_run_id, {c: [row[c] for row in rows] for c in columns}, "comparison.json")
    client.log_text(parent_run_id, _csv(rows, columns), "comparison.csv")
    plotted = any(_point(row, metric) for row in rows)
    if plotted:
        fig = _plot(rows, metric, best)
        client.log_figure(parent_run_id, fig, PLOT_FILE)
        import matplotlib.pyplot as plt

        plt.close(fig)
    if best is not None:
        client.log_metric(parent_run_id, f"best_{metric}", best[metric])
        client.log_metric(parent_run_id, "best_trainable_percent", best["trainable_percent"])
        for key in ("run_id", "run_name", "trial", "method", "r", "learning_rate"):
            client.set_tag(parent_run_id, f"best_{key}", str(best[key]))
    return plotted


def finish(run_id: str, status: str = "FINISHED") -> None:
    _client().set_terminated(run_id, status=status)


def parent_url(run_id: str) -> str | None:
    """The run's page on an MLflow server; None for a local store."""
    return run_url(run_id, _client().get_run(run_id).info.experiment_id)


def plot_location(run_id: str) -> tuple[str | None, str]:
    """(http URL, location) of the parent's plot.

    The URL exists only on a server that proxies artifacts (artifact URI `mlflow-artifacts:/...`):
    its `/get-artifact?path=...&run_uuid=...` route streams the file to any browser. Otherwise the
    location is the artifact URI (a local path for the default SQLite store).
    """
    uri = tracking_uri()
    artifact_uri: str = _client().get_run(run_id).info.artifact_uri
    location = f"{artifact_uri.rstrip('/')}/{PLOT_FILE}"
    if uri.startswith(("http://", "https://")) and artifact_uri.startswith("mlflow-artifacts:"):
        query = urlencode({"path": PLOT_FILE, "run_uuid": run_id}, quote_via=quote)
        return f"{uri.rstrip('/')}/get-artifact?{query}", location
    return None, location


def _point(row: dict[str, Any], metric: str) -> bool:
    return row[metric] is not None and row["trainable_percent"] is not None


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _plot(rows: list[dict[str, Any]], metric: str, best: dict[str, Any] | None) -> Any:
    """The metric against trainable %: one labelled marker per finished trial, the best one ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"lora": "o", "dora": "s", "rslora": "^"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(row["method"] for row in rows):
        points = [row for row in rows if row["method"] == method and _point(row, metric)]
        if points:
            xs = [row["trainable_percent"] for row in points]
            ax.scatter(xs, [row[metric] for row in points], marker=markers.get(method, "o"), label=method)
    for row in rows:
        if _point(row, metric):
            xy = (row["trainable_percent"], row[metric])
            ax.annotate(row["run_name"], xy, textcoords="offset points", xytext=(5, 5), fontsize=8)
    if best is not None:
        ax.scatter(
            [best["trainable_percent"]],
            [best[metric]],
            s=250,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            label=f"best: {best['run_name']}",
        )
    ax.margins(x=0.2, y=0.15)  # room for the labels of the outermost points
    ax.set_xlabel("trainable parameters (%)")
    ax.set_ylabel(metric)
    ax.set_title(f"sweep: {metric} vs trainable %")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
