"""Fixtures for tests that run the `finetune` flow: one Prefect test server, a fresh MLflow store per test.

`prefect_harness` starts Prefect's test server (a subprocess with a temporary SQLite database) once
per pytest session, ~10 s, and only when a test asks for it: the step tests never pay for it.
`mlflow_store` points `MLFLOW_TRACKING_URI` at a SQLite file in the test's tmp_path and makes
tmp_path the working directory, since MLflow puts a SQLite store's artifacts under `./mlruns`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The Prefect test server can take a while to start on a busy 2-core machine.
STARTUP_TIMEOUT_S = 120
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(STARTUP_TIMEOUT_S))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Flows run against a temporary local Prefect server for the rest of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=STARTUP_TIMEOUT_S):
        yield


def use_mlflow_store(monkeypatch: pytest.MonkeyPatch, root: Path) -> Any:
    """Track to `root/mlflow.db` (artifacts under `root/mlruns`); returns a client on that store."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(root)
    return MlflowClient(tracking_uri=uri)


@pytest.fixture
def mlflow_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """An `MlflowClient` on this test's own SQLite store, which the flow tracks to."""
    return use_mlflow_store(monkeypatch, tmp_path)
