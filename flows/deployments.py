"""Serve the deployments of `infra/prefect.yaml` from one local process (what `peftflow serve` runs).

The same file drives `prefect deploy` on a team server (work pools, pull steps); here only the parts
that matter on one machine are read: name, entrypoint, description, tags, parameters (the UI form's
defaults), schedules and concurrency_limit. The training slot (a global concurrency limit that every
training occupies, see `flows.finetune.TRAINING_LIMIT`) is created before serving.

    python -m flows.deployments [--spec infra/prefect.yaml] [--no-schedules] [--training-slots 1]
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.finetune import TRAINING_LIMIT

DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "infra" / "prefect.yaml"


def load_spec(path: str | Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("deployments"), list):
        raise ValueError(f"{path}: expected a prefect.yaml with a `deployments:` list")
    return list(data["deployments"])


def load_flow(entrypoint: str) -> Flow[Any, Any]:
    """`flows/finetune.py:finetune` → the Flow object, imported as a module of this package."""
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name, None)
    if not isinstance(flow, Flow):
        raise ValueError(f"entrypoint {entrypoint!r} does not name a Prefect flow")
    return flow


def build(spec: list[dict[str, Any]], schedules: bool = True) -> list[RunnerDeployment]:
    out = []
    for entry in spec:
        limit = entry.get("concurrency_limit")
        if isinstance(limit, dict):
            limit = ConcurrencyLimitConfig(**limit)
        crons = [
            Cron(s["cron"], timezone=s.get("timezone"), active=bool(s.get("active", True)))
            for s in entry.get("schedules") or []
        ]
        deployment = load_flow(entry["entrypoint"]).to_deployment(
            name=entry["name"],
            description=entry.get("description"),
            tags=entry.get("tags"),
            parameters=entry.get("parameters") or {},
            schedules=crons if schedules else None,
            concurrency_limit=limit,
        )
        assert isinstance(deployment, RunnerDeployment)  # the sync call, not the coroutine
        out.append(deployment)
    return out


def ensure_training_slots(slots: int) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(TRAINING_LIMIT, slots)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__)
    parser.add_argument("--spec", default=str(DEFAULT_SPEC), help="prefect.yaml to read deployments from")
    parser.add_argument("--no-schedules", action="store_true", help="serve without the cron schedules")
    parser.add_argument("--training-slots", type=int, default=1, help="trainings allowed at once (GPUs)")
    parser.add_argument("--limit", type=int, default=8, help="flow runs this process runs at once")
    args = parser.parse_args(argv)
    deployments = build(load_spec(args.spec), schedules=not args.no_schedules)
    ensure_training_slots(args.training_slots)
    serve(*deployments, limit=args.limit)


if __name__ == "__main__":
    main()
