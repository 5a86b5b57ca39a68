"""End to end on the real local stack: `peftflow serve`, runs triggered through the Prefect API, MLflow server.

The stack is what a user gets from `make serve`: a Prefect server, an MLflow tracking server with
proxied artifacts and a model registry, and the served deployments. Runs are started exactly as the
UI's "Run" button starts them. The last test stops the stack and checks that no process is left.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import psutil
import pytest
import yaml

from flows.tracking.registry import TAG_OUTCOME
from tests.flows import fixtures
from tests.support.stack import REPO_ROOT, LocalStack, processes_mentioning, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.server]

MODEL = "e2e-tiny-sentiment"
RUN_METRICS = fixtures.RUN_METRICS | {"eval_accuracy", "eval_f1", "val_accuracy", "val_f1"}


def _client(stack: LocalStack) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_url)


def _retrain(stack: LocalStack, tiny_run: dict[str, Any], **policy: Any) -> dict[str, Any]:
    overrides = {
        **tiny_run["overrides"],
        "params.tracking.experiment": "e2e-retrain",
        "policy.registered_model": MODEL,
        **{f"policy.{k}": v for k, v in policy.items()},
    }
    return stack.wait(stack.trigger("retrain", overrides))


def test_serve_reports_addresses_and_refuses_twins(local_stack: LocalStack) -> None:
    out = local_stack.serve_output
    assert (
        f"Prefect UI : {local_stack.prefect_url}" in out and f"MLflow UI  : {local_stack.mlflow_url}" in out
    )
    again = local_stack.cli(
        "serve",
        "--prefect-port",
        str(local_stack.prefect_port),
        "--mlflow-port",
        str(local_stack.mlflow_port),
    )
    assert again.returncode == 2 and "already running" in again.stderr
    state = json.loads((local_stack.home / "state.json").read_text())
    assert set(state["processes"]) == {"mlflow", "prefect", "deployments"}
    assert local_stack.cli("status").returncode == 0

    # The three deployments, with the quickstart as the finetune form's defaults.
    quickstart = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text())
    finetune = local_stack.deployment("finetune")
    assert finetune["parameters"]["params"] == quickstart
    assert finetune["enforce_parameter_schema"] is True
    assert "params" in finetune["parameter_openapi_schema"]["properties"]
    retrain = local_stack.deployment("retrain")
    assert [s["schedule"]["cron"] for s in retrain["schedules"]] == ["0 2 * * *"]
    assert retrain["concurrency_limit"] == 1 or retrain["global_concurrency_limit"]["limit"] == 1
    assert local_stack.deployment("sweep")["parameters"]["grid"]["methods"] == ["lora", "dora"]
    limit = local_stack.api("/v2/concurrency_limits/filter", {})
    assert {"name": "peftflow-training", "limit": 1} in [
        {"name": x["name"], "limit": x["limit"]} for x in limit
    ]


def test_finetune_triggered_like_the_ui_is_tracked_on_the_mlflow_server(
    local_stack: LocalStack, tiny_run: dict[str, Any]
) -> None:
    overrides = {
        **tiny_run["overrides"],
        "params.tracking.experiment": "e2e",
        "params.tracking.run_name": "e2e-r2",
    }
    flow_run_id = local_stack.trigger("finetune", overrides)
    run = local_stack.wait(flow_run_id)
    assert run["state"]["type"] == "COMPLETED", local_stack.logs(flow_run_id)

    client = _client(local_stack)
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # UI opens on runs
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == "e2e-r2" and mlrun.info.status == "FINISHED"
    assert set(mlrun.data.metrics) >= RUN_METRICS
    assert mlrun.data.params["peft.r"] == "2" and mlrun.data.params["train.max_steps"] == "3"
    assert mlrun.data.tags["prefect.flow_run_id"] == flow_run_id
    assert (
        mlrun.data.tags["prefect.flow_run_url"]
        == f"{local_stack.prefect_url}/flow-runs/flow-run/{flow_run_id}"
    )
    # Artifacts go through the server (proxied) into the stack's own artifact store.
    names = {a.path for a in client.list_artifacts(mlrun.info.run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= names
    assert list((local_stack.home / "mlflow" / "artifacts").rglob("adapter_model.safetensors"))

    # The flow run's page shows the metrics table and a link to the MLflow run.
    artifacts = {a["key"]: a for a in local_stack.artifacts(flow_run_id)}
    table = json.loads(artifacts["eval-metrics"]["data"])
    assert {row["metric"] for row in table} == {"eval_accuracy", "eval_f1", "val_accuracy", "val_f1"}
    run_url = f"{local_stack.mlflow_url}/#/experiments/{experiment.experiment_id}/runs/{mlrun.info.run_id}"
    assert artifacts["mlflow-run"]["data"] == f"[MLflow run]({run_url})"


def test_bad_parameters_are_rejected_by_the_server(local_stack: LocalStack) -> None:
    from urllib.error import HTTPError

    dep = local_stack.deployment("finetune")
    params = dict(dep["parameters"])
    params["params"] = {**params["params"], "peft": {**params["params"]["peft"], "r": 0}}
    with pytest.raises(HTTPError) as err:
        local_stack.api(f"/deployments/{dep['id']}/create_flow_run", {"parameters": params})
    assert err.value.code == 409
    message = err.value.read().decode()
    # peft is a union of methods: the server names the method's object and quotes it, bad rank included.
    assert "Validation failed for field 'params.peft'" in message and "'r': 0" in message, message


def test_retrain_skips_unchanged_data_and_promotes_only_better(
    local_stack: LocalStack, tiny_run: dict[str, Any]
) -> None:
    client = _client(local_stack)
    first = _retrain(local_stack, tiny_run)
    assert first["state"]["type"] == "COMPLETED", local_stack.logs(first["id"])
    assert client.get_registered_model(MODEL).aliases == {"champion": "1"}
    assert {a["key"] for a in local_stack.artifacts(first["id"])} >= {
        "eval-metrics",
        "mlflow-run",
        "retrain-decision",
    }

    second = _retrain(local_stack, tiny_run)
    assert second["state"]["type"] == "COMPLETED"
    assert second["state"]["message"].startswith("Skipped: data and recipe unchanged")
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1

    # New data: a new version, promoted only when it beats the champion on val_accuracy.
    root = tiny_run["root"]
    changed = fixtures.write_jsonl(root / "train-v2.jsonl", fixtures.rows("seq_cls", 24))
    third = local_stack.wait(
        local_stack.trigger(
            "retrain",
            {
                **tiny_run["overrides"],
                "params.data.train_file": changed,
                "params.tracking.experiment": "e2e-retrain",
                "policy.registered_model": MODEL,
            },
        )
    )
    assert third["state"]["type"] == "COMPLETED", local_stack.logs(third["id"])
    v2 = client.get_model_version(MODEL, "2")
    # The champion (v1) was scored on the same validation split as v2, through the server's artifacts.
    metrics = client.get_run(v2.run_id).data.metrics
    aliases = client.get_registered_model(MODEL).aliases
    if metrics["val_accuracy"] > metrics["champion_val_accuracy"]:
        assert aliases == {"champion": "2"}
    else:
        assert aliases == {"champion": "1", "challenger": "2"}
    assert client.get_run(v2.run_id).data.tags[TAG_OUTCOME] in ("promoted", "challenger")


def test_a_retrain_firing_while_one_runs_waits_and_does_not_train_twice(
    local_stack: LocalStack, tiny_run: dict[str, Any]
) -> None:
    overrides = {
        **tiny_run["overrides"],
        "params.tracking.experiment": "e2e-overlap",
        "policy.registered_model": "e2e-overlap",
        "params.train.max_steps": 80,  # still training when the second run is picked up (poll: 2 s)
    }
    first = local_stack.trigger("retrain", overrides)
    local_stack.wait_for_state(first, ("RUNNING",))
    second = local_stack.trigger("retrain", overrides)  # what a schedule or a data event firing now creates
    # The deployment's limit (1, ENQUEUE) holds it back while the first runs: queued, never run beside it.
    waiting = wait_until(
        lambda: (run := local_stack.flow_run(second))["state"]["name"] == "AwaitingConcurrencySlot" and run,
        timeout=120,
        what="the second retrain waiting for the deployment's concurrency slot",
    )
    assert waiting["state"]["type"] == "SCHEDULED"
    assert local_stack.flow_run(first)["state"]["type"] == "RUNNING"  # they did overlap
    assert local_stack.wait(first)["state"]["type"] == "COMPLETED"
    # Then it runs, finds the data the first one trained on, and skips.
    finished_second = local_stack.wait(second, timeout=300)
    assert finished_second["state"]["type"] == "COMPLETED", local_stack.logs(second)
    assert finished_second["state"]["message"].startswith("Skipped: data and recipe unchanged")
    client = _client(local_stack)
    experiment = client.get_experiment_by_name("e2e-overlap")
    assert len(client.search_runs([experiment.experiment_id])) == 1  # one training, not two


def test_sweep_nests_trials_and_shows_the_comparison(
    local_stack: LocalStack, tiny_run: dict[str, Any]
) -> None:
    import urllib.request

    overrides = {
        **tiny_run["overrides"],
        "params.tracking.experiment": "e2e-sweep",
        "grid.methods": ["lora", "dora"],
        "grid.ranks": [2, 4],
        "grid.learning_rates": [0.003],
    }
    run = local_stack.wait(local_stack.trigger("sweep", overrides))
    assert run["state"]["type"] == "COMPLETED", local_stack.logs(run["id"])

    client = _client(local_stack)
    experiment = client.get_experiment_by_name("e2e-sweep")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(
        f"r{r}-{m}-lr0.003" for m in ("lora", "dora") for r in (2, 4)
    )
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "comparison.json",
        "comparison.csv",
        "comparison.png",
    }
    artifacts = {a["key"]: a for a in local_stack.artifacts(run["id"])}
    assert len(json.loads(artifacts["sweep-comparison"]["data"])) == 4
    # The plot is shown from the MLflow server's proxied-artifact route: the URL serves the PNG.
    plot = artifacts["sweep-plot"]
    assert plot["type"] == "image" and plot["data"].startswith(f"{local_stack.mlflow_url}/get-artifact?")
    with urllib.request.urlopen(plot["data"], timeout=30) as resp:
        assert resp.read(8) == b"\x89PNG\r\n\x1a\n"


def test_stop_leaves_no_process(local_stack: LocalStack) -> None:
    state = json.loads((local_stack.home / "state.json").read_text())
    tree = []
    for entry in state["processes"].values():
        root = psutil.Process(entry["pid"])
        tree += [root, *root.children(recursive=True)]
    assert len(tree) >= 3
    out = local_stack.stop()
    assert "stopped: deployments" in out and "prefect" in out and "mlflow" in out, out
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    for marker in (
        str(local_stack.home),
        f"--port {local_stack.prefect_port}",
        f"--port {local_stack.mlflow_port}",
    ):
        assert not processes_mentioning(marker), processes_mentioning(marker)
    assert not (local_stack.home / "state.json").exists()
    assert "nothing is running" in local_stack.stop()
    # The ports are free again: the same command can start the stack anew.
    for port in (local_stack.prefect_port, local_stack.mlflow_port):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            sock.bind(("127.0.0.1", port))


def test_a_restart_keeps_the_data_and_the_nightly_schedule(local_stack: LocalStack) -> None:
    # After the stop above: the same home and ports. `stop` paused the deployments (no scheduled run
    # waits for a runner that is gone); a new serve must resume them, schedule included.
    local_stack.start()
    try:
        retrain = local_stack.deployment("retrain")
        assert retrain["paused"] is False
        assert [(s["schedule"]["cron"], s["active"]) for s in retrain["schedules"]] == [("0 2 * * *", True)]
        assert _client(local_stack).get_registered_model(MODEL).aliases  # the registry survived
    finally:
        local_stack.stop()
    local_stack.start("--no-schedules")
    try:
        retrain = local_stack.deployment("retrain")
        assert retrain["paused"] is False and retrain["schedules"] == []
    finally:
        assert "stopped: deployments" in local_stack.stop()
