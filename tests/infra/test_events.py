"""Data-triggered retraining on the real local stack: `peftflow notify-data` → event → retrain → decision.

The retrain deployment of infra/prefect.yaml carries an event trigger; `peftflow serve` registers it as a
Prefect automation. The event is sent the way a user or a data pipeline sends it, by the CLI, to the
stack's Prefect server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.events import DATA_CHANGED
from flows.retrain import TAG_EVENT_FINGERPRINT
from flows.tracking.registry import TAG_FINGERPRINT, TAG_MODEL, TAG_OUTCOME
from tests.flows import fixtures
from tests.support.stack import REPO_ROOT, LocalStack, set_dotted, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.server]


def _notify(stack: LocalStack, config: Path) -> dict[str, str]:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "notify-data", str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PREFECT_API_URL": f"{stack.prefect_url}/api"},
    )
    assert out.returncode == 0, out.stderr
    lines = {
        key.strip(): value.strip()
        for key, _, value in (line.partition(" : ") for line in out.stdout.splitlines())
        if value
    }
    first = out.stdout.splitlines()[0].split()
    assert first[:2] == ["sent", DATA_CHANGED]
    return {
        "event_id": first[2],
        "resource": lines["resource"].split()[0],
        "fingerprint": lines["fingerprint"],
        "seconds": f"{time.monotonic() - started:.1f}",
    }


def _retrain_runs(stack: LocalStack) -> list[dict[str, Any]]:
    dep = stack.deployment("retrain")
    body = {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"}
    return list(stack.api("/flow_runs/filter", body))


def _run_for(stack: LocalStack, fingerprint: str, known: set[str]) -> dict[str, Any]:
    """The retrain flow run the automation created for the event with `fingerprint`, not one in `known`."""
    return wait_until(
        lambda: next(
            (
                r
                for r in _retrain_runs(stack)
                if r["id"] not in known and r["parameters"].get("data_fingerprint") == fingerprint
            ),
            None,
        ),
        timeout=120,
        what=f"a retrain flow run for the event with fingerprint {fingerprint[:12]}",
    )


def test_a_data_changed_event_retrains_once_per_fingerprint(
    local_stack: LocalStack, tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    # The served recipe (the retrain form's defaults) on the tiny model: what a team's config file holds.
    params = json.loads(json.dumps(local_stack.deployment("retrain")["parameters"]["params"]))
    for key, value in tiny_run["overrides"].items():
        set_dotted(params, key.removeprefix("params."), value)
    params["tracking"]["experiment"] = "e2e-events"
    params["output_dir"] = str(tmp_path / "out")
    params["data"]["train_file"] = fixtures.write_jsonl(
        tmp_path / "train.jsonl", fixtures.rows("seq_cls", 16)
    )
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(params))
    policy = local_stack.deployment("retrain")["parameters"]["policy"]
    client = MlflowClient(tracking_uri=local_stack.mlflow_url)

    # The automation the deployment's trigger became.
    wait_until(
        lambda: any(
            DATA_CHANGED in json.dumps(a["trigger"]) and a["actions"][0]["type"] == "run-deployment"
            for a in local_stack.api("/automations/filter", {})
        ),
        timeout=60,
        what="the retrain deployment's event trigger registered as an automation",
    )

    sent = _notify(local_stack, config)
    assert sent["resource"].startswith("peftflow.data.")
    started = time.monotonic()
    first = local_stack.wait(_run_for(local_stack, sent["fingerprint"], set())["id"])
    first_s = time.monotonic() - started
    assert first["state"]["type"] == "COMPLETED", local_stack.logs(first["id"])
    # It trained on the event's recipe, under the deployment's policy, and decided: the first version
    # of the registered model is the champion.
    assert first["parameters"]["params"]["tracking"]["experiment"] == "e2e-events"
    model = policy["registered_model"]
    assert client.get_registered_model(model).aliases == {"champion": "1"}
    version = client.get_model_version(model, "1")
    run = client.get_run(version.run_id)
    assert run.data.tags[TAG_EVENT_FINGERPRINT] == sent["fingerprint"]
    assert run.data.tags[TAG_MODEL] == model and run.data.tags[TAG_OUTCOME] == "promoted"
    assert run.data.tags["dataset.fingerprint"] == sent["fingerprint"]  # what the event said is what trained
    assert version.source.startswith("models:/")

    # The same data again: the event starts a retrain, which finds the data already trained and skips.
    again = _notify(local_stack, config)
    assert again["fingerprint"] == sent["fingerprint"] and again["event_id"] != sent["event_id"]
    second = local_stack.wait(_run_for(local_stack, again["fingerprint"], {first["id"]})["id"])
    assert second["state"]["type"] == "COMPLETED", local_stack.logs(second["id"])
    assert second["state"]["message"].startswith("Skipped: data and recipe unchanged")
    assert len(client.search_model_versions(f"name='{model}'")) == 1
    experiment = client.get_experiment_by_name("e2e-events")
    trained = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_FINGERPRINT}` != ''")
    assert len(trained) == 1

    # New rows: a new fingerprint, a new training and a new version, decided against the champion.
    fixtures.write_jsonl(tmp_path / "train.jsonl", fixtures.rows("seq_cls", 24))
    changed = _notify(local_stack, config)
    assert changed["fingerprint"] != sent["fingerprint"] and changed["resource"] == sent["resource"]
    third = local_stack.wait(_run_for(local_stack, changed["fingerprint"], {first["id"], second["id"]})["id"])
    assert third["state"]["type"] == "COMPLETED", local_stack.logs(third["id"])
    aliases = client.get_registered_model(model).aliases
    assert aliases in ({"champion": "2"}, {"champion": "1", "challenger": "2"})
    print(f"\nnotify-data {sent['seconds']} s; event -> trained and decided in {first_s:.1f} s")
