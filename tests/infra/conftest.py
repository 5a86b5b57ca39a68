"""One real local stack per test session (`peftflow serve` on free ports), shared by the e2e and browser tests.

Starting it costs ~30-60 s on this machine, so it starts once, when a test first asks for it, and
stops at the end of the session (the e2e test stops it itself to check that nothing is left running).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.flows import fixtures
from tests.support.stack import LocalStack


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("peftflow-home"))
    stack.start()
    try:
        _hold_the_nightly_retrain(stack)
        yield stack
    finally:
        stack.stop()


def _hold_the_nightly_retrain(stack: LocalStack) -> None:
    """The stack serves the real nightly schedule (02:00 UTC), which the tests check; a run of it firing
    while the retrain tests run would train the full quickstart and hold the retrain deployment's slot.
    So the schedule stays but is switched off, and runs it already queued are deleted (the restart test
    serves again, which switches it back on, as a restart does)."""
    dep = stack.deployment("retrain")
    for schedule in dep["schedules"]:
        stack.api(f"/deployments/{dep['id']}/schedules/{schedule['id']}", {"active": False}, method="PATCH")
    body = {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}
    for run in stack.api("/flow_runs/filter", body):
        stack.api(f"/flow_runs/{run['id']}", method="DELETE")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Overrides that turn the quickstart form into a seconds-long run on a tiny local BERT."""
    root = tmp_path_factory.mktemp("tiny-run")
    model = fixtures.model_dir(root / "models", "seq_cls")
    train = fixtures.write_jsonl(root / "train.jsonl", fixtures.rows("seq_cls", 16))
    test = fixtures.write_jsonl(root / "test.jsonl", fixtures.rows("seq_cls", 8))
    return {
        "root": Path(root),
        "overrides": {
            "params.model.name_or_path": model,
            "params.model.dtype": "float32",
            "params.data.train_file": train,
            "params.data.test_file": test,
            "params.data.max_length": 16,
            "params.peft.r": 2,
            "params.peft.target_modules": None,
            "params.train.max_steps": 3,
            "params.train.batch_size": 4,
            "params.train.logging_steps": 1,
            "params.train.eval_every": "no",
            "params.output_dir": str(root / "out"),
        },
    }
