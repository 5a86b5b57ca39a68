"""Failures on the real local stack, each test asserting that nothing is lost.

One stack of its own (`peftflow serve` on free loopback ports), not the session's `local_stack`: these
tests kill and restart its servers. It starts with secrets planted in its environment, as the team
stack's worker gets them (infra/compose.yaml), and a local Hub that accepts only the planted token.
In file order:
- 8 runs submitted at once through the deployment, on one training slot: all complete, and the
  recorded times prove that no two trainings overlapped;
- the MLflow server killed mid-training and restarted: the run finishes with every step recorded;
- the MLflow server killed and kept down: the run fails, its checkpoint is kept, the rerun resumes;
- the Prefect server restarted mid-training: the run finishes and gives its training slot back;
- the planted secrets appear nowhere: logs, flow-run parameters and logs, MLflow params, tags,
  artifacts and models, the model card on the Hub, the run directories (it scans what every test
  above produced too).
Every wait is bounded.
"""

from __future__ import annotations

import base64
import itertools
import json
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.flows import fixtures
from tests.support.hub_server import LocalHub, serve_hub
from tests.support.stack import LocalStack, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.server]

# Distinctive values of the secrets the team stack hands its processes (infra/compose.yaml).
SECRETS = {
    "HF_TOKEN": "hf_plantedTOKENd41d8cd98f00b204",
    "MLFLOW_TRACKING_USERNAME": "planted-mlflow-user",
    "MLFLOW_TRACKING_PASSWORD": "planted-MLFLOW-pw-7c4a8d09ca3762af",
    "POSTGRES_PASSWORD": "planted-POSTGRES-pw-e99a18c428cb38d5",
    "PREFECT_DB_PASSWORD": "planted-PREFECTDB-pw-f25a2fc72690b780",
    "MLFLOW_DB_PASSWORD": "planted-MLFLOWDB-pw-b6b1c2a1f5e8d9c0",
    "PGPASSWORD": "planted-PG-pw-0cc175b9c0f1b6a831c3",
    "MINIO_ROOT_PASSWORD": "planted-MINIO-pw-92eb5ffee6ae2fec",
    "AWS_SECRET_ACCESS_KEY": "planted-AWS-secret-4a8a08f09d37b737",
    "MLFLOW_ADMIN_PASSWORD": "planted-MLFLOWADMIN-pw-8277e0910d75",
    "PREFECT_API_AUTH_STRING": "planted-admin:planted-PREFECTAUTH-pw-e4da3b7fbbce2345",
}
NOT_SECRET = {"MLFLOW_TRACKING_USERNAME"}
TRAIN_ROWS = 16


def _needles() -> dict[str, str]:
    """Each secret, plus the Basic-auth header values a client builds from them."""
    needles = {k: v for k, v in SECRETS.items() if k not in NOT_SECRET}
    user_pw = f"{SECRETS['MLFLOW_TRACKING_USERNAME']}:{SECRETS['MLFLOW_TRACKING_PASSWORD']}"
    needles["mlflow basic auth"] = base64.b64encode(user_pw.encode()).decode()
    needles["prefect basic auth"] = base64.b64encode(SECRETS["PREFECT_API_AUTH_STRING"].encode()).decode()
    return needles


@pytest.fixture(scope="module")
def hub() -> Iterator[LocalHub]:
    with serve_hub(tokens={SECRETS["HF_TOKEN"]: "user"}) as hub:
        yield hub


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, hub: LocalHub) -> Iterator[LocalStack]:
    hf_home = tmp_path_factory.mktemp("failures-hf-home")
    env = {
        **SECRETS,
        # The flows publish to the local Hub (and any Hub lookup goes there, answered at once).
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_XET": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1",
    }
    with pytest.MonkeyPatch.context() as patch:  # for the whole module: restarted servers get it too
        for key, value in env.items():
            patch.setenv(key, value)
        stack = LocalStack(tmp_path_factory.mktemp("failures-home"))
        # No nightly retrain firing into these tests (at 02:00 UTC it would take the training slot).
        stack.start("--no-schedules")
        try:
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("failures-data")
    return {
        "root": root,
        "params.model.name_or_path": fixtures.model_dir(root / "models", "seq_cls"),
        "params.model.dtype": "float32",
        "params.data.train_file": fixtures.write_jsonl(
            root / "train.jsonl", fixtures.rows("seq_cls", TRAIN_ROWS)
        ),
        "params.data.test_file": fixtures.write_jsonl(root / "test.jsonl", fixtures.rows("seq_cls", 8)),
        "params.data.validation_fraction": None,  # no validation split: nothing to select on
        "params.data.max_length": 16,
        "params.peft.r": 2,
        "params.peft.target_modules": None,
        "params.train.batch_size": 4,
        "params.train.logging_steps": 1,
        "params.train.eval_every": "no",
    }


def _overrides(tiny: dict[str, Any], name: str, **more: Any) -> dict[str, Any]:
    """The tiny recipe, tracked in experiment `failures-<name>`, with its own output directory."""
    base = {k: v for k, v in tiny.items() if k != "root"}
    return {
        **base,
        "params.tracking.experiment": f"failures-{name}",
        "params.output_dir": str(tiny["root"] / "out" / name),
        **{f"params.{k}": v for k, v in more.items()},
    }


def _client(stack: LocalStack) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_url)


def _runs(stack: LocalStack, experiment: str) -> list[Any]:
    client = _client(stack)
    found = client.get_experiment_by_name(experiment)
    return (
        list(client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"]))
        if found
        else []
    )


def _steps(stack: LocalStack, run_id: str, metric: str = "train_loss") -> list[int]:
    return [m.step for m in _client(stack).get_metric_history(run_id, metric)]


def _training_run(stack: LocalStack, experiment: str, min_steps: int = 3) -> str:
    """The id of the experiment's one MLflow run, once it has recorded `min_steps` training steps."""

    def started() -> str | None:
        runs = _runs(stack, experiment)
        if runs and len(_steps(stack, runs[0].info.run_id)) >= min_steps:
            return str(runs[0].info.run_id)
        return None

    return str(wait_until(started, 300, f"{min_steps} training steps in MLflow experiment {experiment}"))


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _all_logs(stack: LocalStack, flow_run_id: str | None = None) -> list[dict[str, Any]]:
    """Every log entry on the Prefect server (of one flow run), oldest first, page by page."""
    entries: list[dict[str, Any]] = []
    body: dict[str, Any] = {"limit": 200, "sort": "TIMESTAMP_ASC"}
    if flow_run_id:
        body["logs"] = {"flow_run_id": {"any_": [flow_run_id]}}
    while True:
        page = stack.api("/logs/filter", {**body, "offset": len(entries)})
        entries += page
        if len(page) < 200:
            return entries


def _run_dir(output_dir: Path) -> Path:
    (run_dir,) = (output_dir / "runs").iterdir()
    return run_dir


# -- 8 runs at once, one training slot ---------------------------------------------------------------


def test_eight_runs_at_once_train_one_at_a_time_and_all_complete(
    stack: LocalStack, tiny: dict[str, Any]
) -> None:
    limit = stack.api("/v2/concurrency_limits/filter", {})
    assert [x["limit"] for x in limit if x["name"] == "peftflow-training"] == [1]
    started = time.monotonic()
    # Eight recipes (seeds): eight run directories. Clicked "Run" eight times, as fast as the API answers.
    flow_runs = [
        stack.trigger(
            "finetune",
            _overrides(
                tiny,
                "burst",
                **{
                    "train.max_steps": 3,
                    "train.seed": seed,
                    "tracking.run_name": f"burst-{seed}",
                    "tracking.log_model": False,
                    "tracking.system_metrics": False,
                },
            ),
        )
        for seed in range(8)
    ]
    finished = [stack.wait(run_id, timeout=900) for run_id in flow_runs]
    print(f"8 runs: {time.monotonic() - started:.0f} s")
    assert [r["state"]["type"] for r in finished] == ["COMPLETED"] * 8, [r["state"] for r in finished]

    runs = _runs(stack, "failures-burst")
    assert sorted(r.info.run_name for r in runs) == [f"burst-{seed}" for seed in range(8)]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert set(run.data.metrics) >= fixtures.RUN_METRICS | {"eval_accuracy"}, run.info.run_name
        assert _steps(stack, run.info.run_id) == [1, 2, 3], run.info.run_name

    # Each training runs between its run's "took a slot" and "gave the slot back" log lines (logged
    # just after taking it and just after giving it back); its training steps are recorded in between.
    held = []
    for flow_run_id in flow_runs:
        logs = _all_logs(stack, flow_run_id)
        took = [
            _timestamp(e["timestamp"]) for e in logs if "took a slot of 'peftflow-training'" in e["message"]
        ]
        gave = [
            _timestamp(e["timestamp"])
            for e in logs
            if "gave the slot of 'peftflow-training' back" in e["message"]
        ]
        assert len(took) == 1 and len(gave) == 1, [e["message"] for e in logs]
        (mlflow_run,) = [r for r in runs if r.data.tags["prefect.flow_run_id"] == flow_run_id]
        stamps = [
            m.timestamp / 1000
            for m in _client(stack).get_metric_history(mlflow_run.info.run_id, "train_loss")
        ]
        assert took[0] <= min(stamps) and max(stamps) <= gave[0], (took, stamps, gave)
        held.append((took[0], gave[0]))
    held.sort()
    for (_, released), (taken, _) in itertools.pairwise(held):
        assert released <= taken, f"two trainings held the slot at once: {held}"
    # The slot is what kept them apart: some `train` tasks did run at the same time, waiting for it.
    tasks = stack.api("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": flow_runs}}})
    train = sorted(
        (_timestamp(t["start_time"]), _timestamp(t["end_time"]))
        for t in tasks
        if t["name"].startswith("train-")
    )
    assert len(train) == 8
    assert any(end > next_start for (_, end), (next_start, _) in itertools.pairwise(train)), train


# -- the MLflow server dies mid-training ---------------------------------------------------------------


def test_mlflow_killed_mid_training_and_restarted_records_every_step(
    stack: LocalStack, tiny: dict[str, Any]
) -> None:
    steps = 30
    overrides = _overrides(tiny, "mlflow-restart", **{"train.max_steps": steps})
    flow_run = stack.trigger("finetune", overrides)
    run_id = _training_run(stack, "failures-mlflow-restart")
    killed_at = time.time()
    stack.stop_service("mlflow", kill=True)
    out = Path(overrides["params.output_dir"])
    try:
        # Training goes on without the server: it reaches its last step (the final checkpoint) meanwhile.
        wait_until(
            lambda: list(out.glob(f"runs/*/checkpoints/checkpoint-{steps}")),
            300,
            "training to finish without MLflow",
        )
        assert stack.flow_run(flow_run)["state"]["type"] == "RUNNING"  # waiting for the server, not failed
    finally:
        restart_s = stack.start_service("mlflow")
    back_at = time.time()
    print(f"MLflow down {back_at - killed_at:.0f} s (restart {restart_s:.0f} s)")

    finished = stack.wait(flow_run, timeout=400)
    assert finished["state"]["type"] == "COMPLETED", stack.logs(flow_run)
    run = _client(stack).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert _steps(stack, run_id) == list(range(1, steps + 1))
    assert set(run.data.metrics) >= fixtures.RUN_METRICS | {"eval_accuracy"}
    # Steps trained while the server was gone were kept with their own times and sent afterwards.
    history = _client(stack).get_metric_history(run_id, "train_loss")
    while_down = [m.step for m in history if killed_at < m.timestamp / 1000 < back_at]
    assert len(while_down) >= 2, (killed_at, back_at, [(m.step, m.timestamp) for m in history])
    logs = stack.logs(flow_run)
    assert "MLflow tracking server unreachable" in logs and "MLflow tracking server is back" in logs, logs
    names = {a.path for a in _client(stack).list_artifacts(run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in names
    assert (_run_dir(out) / "adapter" / "adapter_model.safetensors").is_file()


def test_mlflow_gone_until_training_ends_fails_the_run_and_the_rerun_resumes(
    stack: LocalStack, tiny: dict[str, Any]
) -> None:
    steps = 30
    overrides = _overrides(tiny, "mlflow-gone", **{"train.max_steps": steps})
    flow_run = stack.trigger("finetune", {**overrides, "params.tracking.flush_timeout_s": 3})
    first_id = _training_run(stack, "failures-mlflow-gone")
    stack.stop_service("mlflow", kill=True)
    try:
        failed = stack.wait(flow_run, timeout=400)
    finally:
        stack.start_service("mlflow")
    assert failed["state"]["type"] == "FAILED", failed["state"]
    message = failed["state"]["message"]
    assert "TrackingUnavailable" in message and "tracking.flush_timeout_s=3" in message, message
    assert "rerun the same parameters" in message, message
    # The trained adapter is kept as the last checkpoint; no final adapter pretends the run is done.
    run_dir = _run_dir(Path(overrides["params.output_dir"]))
    assert (run_dir / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors").is_file()
    assert not (run_dir / "adapter").exists()
    first = _client(stack).get_run(first_id)
    # The server was gone when the flow failed: the run could not be closed, and never looks finished.
    assert first.info.status == "RUNNING"
    assert len(_steps(stack, first_id)) < steps

    rerun = stack.wait(stack.trigger("finetune", overrides), timeout=400)
    assert rerun["state"]["type"] == "COMPLETED", stack.logs(rerun["id"])
    (second,) = [r for r in _runs(stack, "failures-mlflow-gone") if r.info.run_id != first_id]
    assert second.info.status == "FINISHED"
    assert second.data.tags["train.resumed_from"] == f"checkpoint-{steps}"
    # The rerun trained nothing more, and still records the whole history: the checkpoint's steps.
    assert _steps(stack, second.info.run_id) == list(range(1, steps + 1))
    assert set(second.data.metrics) >= fixtures.RUN_METRICS | {"eval_accuracy"}
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run_dir / "checkpoints").exists()


# -- the Prefect server restarts mid-training -------------------------------------------------------------


def test_prefect_restart_mid_training_finishes_the_run_and_frees_the_slot(
    stack: LocalStack, tiny: dict[str, Any]
) -> None:
    steps = 30
    overrides = _overrides(tiny, "prefect-restart", **{"train.max_steps": steps})
    flow_run = stack.trigger("finetune", overrides)
    run_id = _training_run(stack, "failures-prefect-restart")
    stopped_at = time.monotonic()
    stack.stop_service("prefect")  # SIGTERM: the server shuts down, as a restart does
    restart_s = stack.start_service("prefect")
    print(f"Prefect down {time.monotonic() - stopped_at:.0f} s (restart {restart_s:.0f} s)")

    finished = stack.wait(flow_run, timeout=400)
    assert finished["state"]["type"] == "COMPLETED", (finished["state"], stack.logs(flow_run))
    tasks = stack.api("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [flow_run]}}})
    assert {t["name"].rsplit("-", 1)[0]: t["state_type"] for t in tasks} == {
        "tokenize": "COMPLETED",
        "wrap": "COMPLETED",
        "train": "COMPLETED",
        "evaluate": "COMPLETED",
    }
    run = _client(stack).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert _steps(stack, run_id) == list(range(1, steps + 1))
    assert set(run.data.metrics) >= fixtures.RUN_METRICS | {"eval_accuracy"}
    assert "gave the slot of 'peftflow-training' back" in stack.logs(flow_run)
    # The slot is free again on the restarted server: the next training will not wait for a ghost.
    (slot,) = [x for x in stack.api("/v2/concurrency_limits/filter", {}) if x["name"] == "peftflow-training"]
    assert slot["active_slots"] == 0, slot
    assert (
        _run_dir(Path(overrides["params.output_dir"])) / "adapter" / "adapter_model.safetensors"
    ).is_file()


# -- secrets -----------------------------------------------------------------------------------------------


def _haystack(stack: LocalStack, hub: LocalHub, out: Path, scratch: Path) -> dict[str, bytes]:
    """Everything the stack and the runs left where a person or a tool can read it: where -> content."""
    found: dict[str, bytes] = {}
    for root in (stack.home, out):  # logs, both servers' databases, the artifact store; run directories
        for path in root.rglob("*"):
            if path.is_file():
                found[str(path)] = path.read_bytes()
    found["prefect flow runs"] = json.dumps(stack.api("/flow_runs/filter", {"limit": 200})).encode()
    found["prefect task runs"] = json.dumps(stack.api("/task_runs/filter", {"limit": 200})).encode()
    found["prefect deployments"] = json.dumps(stack.api("/deployments/filter", {"limit": 200})).encode()
    found["prefect artifacts"] = json.dumps(stack.api("/artifacts/filter", {"limit": 200})).encode()
    found["prefect logs"] = json.dumps(_all_logs(stack)).encode()
    client = _client(stack)
    experiments = client.search_experiments()
    for run in client.search_runs([e.experiment_id for e in experiments], max_results=500):
        found[f"mlflow run {run.info.run_id}"] = json.dumps(
            {"params": run.data.params, "tags": run.data.tags, "metrics": sorted(run.data.metrics)}
        ).encode()
        local = client.download_artifacts(run.info.run_id, "", str(scratch / run.info.run_id))
        for path in Path(local).rglob("*"):
            if path.is_file():
                found[f"mlflow artifact {run.info.run_id}/{path.relative_to(local)}"] = path.read_bytes()
    for model in client.search_logged_models([e.experiment_id for e in experiments]):
        import mlflow

        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model.artifact_location,
            dst_path=str(scratch / model.model_id),
            tracking_uri=stack.mlflow_url,
        )
        for path in Path(local).rglob("*"):
            if path.is_file():
                found[f"mlflow model {model.model_id}/{path.relative_to(local)}"] = path.read_bytes()
    for repo_id, repo in hub.repos.items():
        for commit in repo.commits.values():
            for name, data in commit.files.items():
                found[f"hub {repo_id}@{commit.oid[:8]}/{name}"] = data
    return found


def test_planted_secrets_appear_nowhere(
    stack: LocalStack, hub: LocalHub, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The secrets are really there to leak: in the environment of the process that runs the flows.
    state = json.loads((stack.home / "state.json").read_text())
    environ = Path(f"/proc/{state['processes']['deployments']['pid']}/environ").read_bytes()
    for key, value in SECRETS.items():
        assert f"{key}={value}".encode() in environ.split(b"\0"), key

    overrides = _overrides(
        tiny,
        "secrets",
        **{
            "train.max_steps": 3,
            "model.hub_id": "user/tiny-bert",
            "publish.repo_id": "user/secrets-check",
            "tracking.run_name": "secrets-check",
        },
    )
    flow_run = stack.trigger("finetune", {**overrides, "baseline": True})
    finished = stack.wait(flow_run, timeout=400)
    assert finished["state"]["type"] == "COMPLETED", stack.logs(flow_run)
    # Published with the planted token (the only one this Hub accepts), model card included.
    card = hub.file("user/secrets-check", "README.md").decode()
    assert "## Evaluation" in card and "user/tiny-bert" in card

    with tempfile.TemporaryDirectory() as scratch:
        haystack = _haystack(stack, hub, tiny["root"] / "out", Path(scratch))
    # What was scanned holds what it should: the stack's logs, the flow-run parameters, MLflow's
    # params and artifacts (the logged model among them), the model card.
    where = "\n".join(haystack)
    for expected in (
        "logs/deployments.log",
        "logs/prefect.log",
        "logs/mlflow.log",
        "mlflow.db",
        "prefect.db",
    ):
        assert expected in where, expected
    assert (
        b'"publish": {' in haystack["prefect flow runs"]
        or b'"repo_id": "user/secrets-check"' in haystack["prefect flow runs"]
    )
    assert any(k.startswith("mlflow artifact") and k.endswith("params.yaml") for k in haystack)
    assert any(k.startswith("mlflow model") and k.endswith("MLmodel") for k in haystack)
    assert any(k.startswith("hub user/secrets-check") and k.endswith("README.md") for k in haystack)
    assert len(haystack["prefect logs"]) > 1000

    leaks = [
        f"{name} in {place}"
        for name, needle in _needles().items()
        for place, content in haystack.items()
        if needle.encode() in content
    ]
    assert not leaks, leaks
