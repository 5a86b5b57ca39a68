"""The `sweep` flow: a grid of `finetune` trials nested under one MLflow run, with a comparison.

The training test runs a 4-trial grid (lora/dora × r 2/4) on a tiny BERT and reads everything back:
the parent and child runs from the MLflow store, the comparison table and plot from the parent's
artifacts, the table artifact from the Prefect server. Failing trials are recorded, not fatal, unless
all fail; a bad grid or metric fails before any run exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

import flows.steps.model as model_step
import flows.steps.train as train_step
from flows.params import FinetuneParams, SweepGrid
from flows.sweep import sweep
from tests.flows import fixtures

pytestmark = pytest.mark.usefixtures("prefect_harness")

PARENT = "mlflow.parentRunId"


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fixtures.model_dir(tmp_path_factory.mktemp("models"), "seq_cls")


def _params(root: Path, model_path: str, **sections: dict[str, Any]) -> FinetuneParams:
    """One epoch of 3 steps on 24 rows, a validation evaluation at its end (val_loss, on 6 rows carved
    from train), accuracy on 8 test rows.

    `sections` update the config's sections.
    """
    config: dict[str, Any] = {
        "model": {"name_or_path": model_path, "task": "seq_cls", "dtype": "float32"},
        "data": {
            "train_file": fixtures.write_jsonl(root / "train.jsonl", fixtures.rows("seq_cls", 24)),
            "test_file": fixtures.write_jsonl(root / "test.jsonl", fixtures.rows("seq_cls", 8)),
            "validation_fraction": 0.25,
        },
        "peft": {"lora_alpha": 8},
        "train": {"max_steps": 3, "batch_size": 8, "eval_batch_size": 8, "logging_steps": 3},
        "eval": {"metrics": ["accuracy"], "num_logged_predictions": 0},
        "tracking": {"experiment": "sweep", "tags": {"team": "nlp"}},
        "output_dir": str(root / "out"),
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return FinetuneParams.model_validate(config)


def _runs(client: Any) -> list[Any]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments))


def _download(client: Any, run_id: str, path: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dest)))


def _prefect_artifacts(flow_run_id: str, key: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        return prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]),
            )
        )


def _flow_run_name(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        return prefect.read_flow_run(UUID(flow_run_id)).name


@pytest.mark.slow
def test_sweep_nests_one_run_per_trial_and_compares_them(
    bert: str, mlflow_store: Any, tmp_path: Path
) -> None:
    client = mlflow_store
    grid = SweepGrid(
        methods=["lora", "dora"],
        ranks=[2, 4],
        learning_rates=[5e-3],
        metric="val_loss",
        direction="minimize",
    )
    summary = sweep(_params(tmp_path, bert), grid)

    runs = _runs(client)
    (parent,) = [r for r in runs if PARENT not in r.data.tags]
    children = sorted(
        (r for r in runs if PARENT in r.data.tags), key=lambda r: int(r.data.tags["sweep.trial"])
    )
    assert parent.info.run_id == summary["parent_run_id"] and parent.info.status == "FINISHED"
    assert json.loads(parent.data.tags["sweep.grid"]) == grid.model_dump(mode="json")
    assert parent.data.params["sweep.ranks"] == "[2, 4]"

    # One child per trial, in grid order, each with its own params, metrics and Prefect subflow run.
    expected = [("lora", 2), ("lora", 4), ("dora", 2), ("dora", 4)]
    assert len(children) == 4
    for i, (child, (method, r)) in enumerate(zip(children, expected, strict=True)):
        name = f"r{r}-{method}-lr0.005"
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        assert tags[PARENT] == parent.info.run_id and tags["sweep.trial"] == str(i)
        assert tags["team"] == "nlp" and child.info.run_name == name and child.info.status == "FINISHED"
        assert (params["peft.r"], params["peft.use_dora"]) == (str(r), str(method == "dora"))
        assert (params["peft.use_rslora"], params["train.learning_rate"]) == ("False", "0.005")
        assert params["peft_config.use_dora"] == str(method == "dora")
        assert {"eval_accuracy", "val_accuracy", "val_loss", "trainable_percent"} <= set(metrics)
        assert tags["prefect.flow_run_id"] != parent.data.tags["prefect.flow_run_id"]
        assert _flow_run_name(tags["prefect.flow_run_id"]) == name
    percents = [c.data.metrics["trainable_percent"] for c in children]
    assert percents[0] < percents[1] and percents[2] < percents[3]  # rank 4 trains more than rank 2
    assert percents[0] < percents[2] and percents[1] < percents[3]  # DoRA adds magnitude vectors

    # The comparison table on the parent holds each child's own figures.
    table = json.loads(_download(client, parent.info.run_id, "comparison.json", tmp_path / "dl").read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [row["run_id"] for row in rows] == [c.info.run_id for c in children]
    for row, child in zip(rows, children, strict=True):
        # MLflow writes the table with pandas, which keeps 10 decimals.
        assert row["val_loss"] == pytest.approx(child.data.metrics["val_loss"], abs=1e-10)
        assert "eval_loss" not in row  # no test loss is logged (the test split is scored by metrics)
        assert row["trainable_percent"] == pytest.approx(child.data.metrics["trainable_percent"], abs=1e-10)
    assert [(row["trial"], row["method"], row["r"]) for row in rows] == [
        (i, method, r) for i, (method, r) in enumerate(expected)
    ]
    assert {(row["status"], row["error"], row["learning_rate"]) for row in rows} == {("FINISHED", None, 5e-3)}
    csv_lines = (
        _download(client, parent.info.run_id, "comparison.csv", tmp_path / "dl").read_text().splitlines()
    )
    assert len(csv_lines) == 5 and csv_lines[0].startswith("trial,run_name,method,r,learning_rate,status")
    png = _download(client, parent.info.run_id, "comparison.png", tmp_path / "dl").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")

    # The best trial is the lowest val_loss (the earlier trial on a tie).
    losses = [c.data.metrics["val_loss"] for c in children]
    best = children[losses.index(min(losses))]
    assert parent.data.tags["best_run_id"] == best.info.run_id == summary["best"]["run_id"]
    assert parent.data.metrics["best_val_loss"] == min(losses)
    assert parent.data.tags["best_r"] == best.data.params["peft.r"]

    # The same table as a Prefect artifact of the sweep's flow run, and where the plot is.
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    (artifact,) = _prefect_artifacts(flow_run_id, "sweep-comparison")
    prefect_rows = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    assert [row["run_id"] for row in prefect_rows] == [c.info.run_id for c in children]
    assert [row["val_loss"] for row in prefect_rows] == [round(v, 6) for v in losses]
    (plot,) = _prefect_artifacts(flow_run_id, "sweep-plot")
    assert plot.type == "markdown" and "comparison.png" in plot.data and parent.info.run_id in plot.data


@pytest.mark.slow
def test_failed_trial_is_recorded_and_the_sweep_goes_on(
    bert: str, mlflow_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train = train_step.train

    def train_or_fail(params: FinetuneParams, *args: Any, **kwargs: Any) -> Any:
        if params.peft.r == 4:
            raise RuntimeError("out of memory (simulated)")
        return real_train(params, *args, **kwargs)

    monkeypatch.setattr(train_step, "train", train_or_fail)
    summary = sweep(_params(tmp_path, bert), SweepGrid(methods=["lora"], ranks=[4, 2]))

    failed, done = summary["trials"]
    assert failed["status"] == "FAILED" and "out of memory (simulated)" in failed["error"]
    assert failed["val_accuracy"] is None and failed["run_id"] is not None
    assert mlflow_store.get_run(failed["run_id"]).info.status == "FAILED"
    assert done["status"] == "FINISHED" and done["error"] is None
    assert summary["best"]["run_id"] == done["run_id"]
    parent = mlflow_store.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["best_run_id"] == done["run_id"]


def test_sweep_fails_when_every_trial_fails(
    bert: str, mlflow_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_wrap(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot wrap (simulated)")

    monkeypatch.setattr(model_step, "wrap", broken_wrap)
    with pytest.raises(RuntimeError, match=r"all 2 trials of the sweep failed; first error: .*cannot wrap"):
        sweep(_params(tmp_path, bert), SweepGrid(methods=["lora", "rslora"], ranks=[2]))

    runs = _runs(mlflow_store)
    (parent,) = [r for r in runs if PARENT not in r.data.tags]
    assert parent.info.status == "FAILED" and "best_run_id" not in parent.data.tags
    assert sorted(r.info.status for r in runs if PARENT in r.data.tags) == ["FAILED", "FAILED"]
    table = json.loads(
        _download(mlflow_store, parent.info.run_id, "comparison.json", tmp_path / "dl").read_text()
    )
    assert [row[table["columns"].index("status")] for row in table["data"]] == ["FAILED", "FAILED"]
    assert "comparison.png" not in {a.path for a in mlflow_store.list_artifacts(parent.info.run_id)}


BAD_SWEEPS = {
    "unlogged metric": (
        {"metric": "val_f1"},
        {},
        r"grid\.metric='val_f1' is not a metric.*use one of: val_accuracy, val_loss$",
    ),
    "a test metric": (
        {"metric": "eval_accuracy"},
        {},
        r"grid\.metric='eval_accuracy' is not a metric.*use one of: val_accuracy, val_loss$",
    ),
    "no val_loss without evaluations": (
        {"metric": "val_loss"},
        {"train": {"eval_every": "no"}},
        r"grid\.metric='val_loss'.*use one of: val_accuracy$",
    ),
    "no validation split": (
        {},
        {"data": {"validation_fraction": None}},
        r"a sweep ranks its trials on the validation split and this recipe has none",
    ),
    "repeated rank": ({"ranks": [4, 8, 4]}, {}, r"grid\.ranks=\[4, 8, 4\] repeats a value"),
    "rank 0": ({"ranks": [0]}, {}, r"every rank must be > 0"),
    "too many trials": (
        {"methods": ["lora"], "ranks": [2, 4], "learning_rates": [1e-3, 2e-3], "max_trials": 3},
        {},
        r"the grid has 4 trials, more than max_trials=3",
    ),
    "publishing": (
        {},
        {"publish": {"repo_id": "user/x"}},
        r"publish\.repo_id='user/x': a sweep does not publish",
    ),
}


@pytest.mark.parametrize("case", BAD_SWEEPS)
def test_bad_sweep_fails_before_any_run(
    case: str,
    bert: str,
    mlflow_store: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grid, sections, message = BAD_SWEEPS[case]

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded for a sweep that is invalid")

    monkeypatch.setattr(model_step, "wrap", must_not_run)
    # The grid goes in as the Prefect UI would send it: plain JSON, validated by the flow.
    with pytest.raises(Exception, match=message):
        sweep(_params(tmp_path, bert, **sections), grid)  # type: ignore[arg-type]
    assert _runs(mlflow_store) == []
    assert not (tmp_path / "out").exists()
