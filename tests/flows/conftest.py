"""Fixtures for tests that run the `finetune` flow: one Prefect test server, a fresh MLflow store per test.

`prefect_harness` starts Prefect's test server (a subprocess with a temporary SQLite database) once
per pytest session, ~10 s, and only when a test asks for it: the step tests never pay for it.
`mlflow_store` points `MLFLOW_TRACKING_URI` at a SQLite file in the test's tmp_path (a copy of one
migrated template: a new database costs seconds of schema migrations) and makes tmp_path the working
directory, since MLflow puts a SQLite store's artifacts under `./mlruns`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The Prefect test server can take a while to start on a busy 2-core machine.
STARTUP_TIMEOUT_S = 120
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(STARTUP_TIMEOUT_S))
# MLflow's system metrics sample every 10 s by default, longer than most test runs last.
os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Flows run against a temporary local Prefect server for the rest of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=STARTUP_TIMEOUT_S):
        yield


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database with its schema migrated (~5-10 s, so done once and copied)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def use_mlflow_store(monkeypatch: pytest.MonkeyPatch, root: Path, template: Path) -> Any:
    """Track to a fresh copy of `template` at `root/mlflow.db`, artifacts under `root/mlruns`.

    Returns a client on that store. The working directory becomes `root` first: MLflow resolves a
    SQLite store's default artifact root (`./mlruns`) when it first opens the store.
    """
    from mlflow.tracking import MlflowClient

    db = root / "mlflow.db"
    shutil.copyfile(template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(tracking_uri=uri)


@pytest.fixture
def mlflow_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_template: Path) -> Any:
    """An `MlflowClient` on this test's own SQLite store, which the flow tracks to."""
    return use_mlflow_store(monkeypatch, tmp_path, mlflow_template)
