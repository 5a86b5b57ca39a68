"""Runs that start together on the same data log the same MLflow dataset: a lost create race is retried.

Seen in the 8-runs-at-once failure test: two runs both missed the dataset row, the second insert hit
the table's unique constraint, and the MLflow server answered BAD_REQUEST, failing a healthy run.
"""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.exceptions import MlflowException

from flows import tracking

SQLITE_RACE = (
    "BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
    "datasets.name, datasets.digest"
)
POSTGRES_RACE = 'duplicate key value violates unique constraint "dataset_pk"'


class _Client:
    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        self.calls: list[tuple[str, Any]] = []

    def log_inputs(self, run_id: str, datasets: list[Any]) -> None:
        self.calls.append((run_id, datasets))
        if self.failures:
            raise MlflowException(self.failures.pop(0))


@pytest.mark.parametrize("message", [SQLITE_RACE, POSTGRES_RACE])
def test_a_lost_dataset_create_race_is_retried_and_links_the_dataset(
    message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)
    client = _Client([message, message])
    tracking._log_inputs_once_created(client, "run-1", "entity")  # type: ignore[arg-type]
    assert client.calls == [("run-1", ["entity"])] * 3  # two lost races, then linked


def test_other_errors_and_a_race_that_never_settles_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)
    other = _Client(["RESOURCE_DOES_NOT_EXIST: run 'run-1' not found"])
    with pytest.raises(MlflowException, match="not found"):
        tracking._log_inputs_once_created(other, "run-1", "entity")  # type: ignore[arg-type]
    assert len(other.calls) == 1  # not retried
    stuck = _Client([SQLITE_RACE] * 10)
    with pytest.raises(MlflowException, match="UNIQUE constraint"):
        tracking._log_inputs_once_created(stuck, "run-1", "entity", attempts=3)  # type: ignore[arg-type]
    assert len(stuck.calls) == 3


def test_eight_runs_logging_the_same_dataset_at_once_all_link_it(tmp_path: Any) -> None:
    """The race itself, on MLflow's real SQL store (8 threads released together); without the retry
    about a third of them failed here."""
    import threading

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("race")
    runs = [client.create_run(experiment).info.run_id for _ in range(8)]
    start = threading.Barrier(len(runs))
    errors: list[str] = []

    def log(run_id: str) -> None:
        dataset = MetaDataset(  # type: ignore[abstract]
            source=resolve_dataset_source(str(tmp_path / "train.jsonl")), name="train", digest="abc123"
        )
        entity = DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", "training")])
        own = MlflowClient(tracking_uri=uri)
        start.wait()
        try:
            tracking._log_inputs_once_created(own, run_id, entity)
        except Exception as exc:  # collected: an assertion in a thread would not fail the test
            errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=log, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert [len(client.get_run(r).inputs.dataset_inputs) for r in runs] == [1] * len(runs)
