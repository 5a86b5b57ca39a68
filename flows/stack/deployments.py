"""Serve the deployments of `infra/prefect.yaml` from one local process (what `peftflow serve` runs).

The same file drives `prefect deploy` on a team server (work pools, pull steps); here only the parts
that matter on one machine are read: name, entrypoint, description, tags, parameters (the UI form's
defaults), schedules, triggers (data-changed events, flows.events) and concurrency_limit. The training
slot (a global concurrency limit that every training occupies, see `flows.finetune.TRAINING_LIMIT`) is
created before serving.

    python -m flows.stack.deployments [--spec infra/prefect.yaml] [--no-schedules] [--training-slots 1]
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.finetune import TRAINING_LIMIT
from flows.stack.serve import load_spec

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "infra" / "prefect.yaml"


def load_flow(entrypoint: str) -> Flow[Any, Any]:
    """`flows/finetune.py:finetune` → the Flow object, imported as a module of this package."""
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name, None)
    if not isinstance(flow, Flow):
        raise ValueError(f"entrypoint {entrypoint!r} does not name a Prefect flow")
    return flow


def load_triggers(entry: dict[str, Any]) -> list[Any]:
    """The deployment's `triggers:` (event triggers with parameter templates), validated by Prefect."""
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(list[DeploymentTriggerTypes]).validate_python(entry.get("triggers") or [])
    except ValueError as exc:
        raise ValueError(f"deployment {entry['name']!r}: invalid triggers: {exc}") from None


def build(
    spec: list[dict[str, Any]], schedules: bool = True, triggers: bool = True
) -> list[RunnerDeployment]:
    out = []
    for entry in spec:
        limit = entry.get("concurrency_limit")
        if isinstance(limit, dict):
            limit = ConcurrencyLimitConfig(**limit)
        # The slug names a schedule across serves (apply_and_resume matches on it).
        crons = [
            Cron(
                s["cron"],
                timezone=s.get("timezone"),
                active=bool(s.get("active", True)),
                slug=s.get("slug") or f"{entry['name']}-{i}",
            )
            for i, s in enumerate(entry.get("schedules") or [])
            if schedules
        ]
        deployment = load_flow(entry["entrypoint"]).to_deployment(
            name=entry["name"],
            description=entry.get("description"),
            tags=entry.get("tags"),
            parameters=entry.get("parameters") or {},
            schedules=crons,
            concurrency_limit=limit,
            triggers=load_triggers(entry) if triggers else None,
        )
        assert isinstance(deployment, RunnerDeployment)  # the sync call, not the coroutine
        out.append(deployment)
    return out


def apply_and_resume(deployments: list[RunnerDeployment]) -> None:
    """Register the deployments, un-pause them and make their schedules exactly those of the spec.

    A served process pauses its deployments when it stops (so no scheduled run waits for a runner
    that is gone); re-registering neither un-pauses them nor updates schedules that already exist, so
    without this a restart would leave the nightly retrain off, and `--no-schedules` would not stop it.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        ids = []
        for deployment in deployments:
            deployment_id = deployment.apply()
            assert isinstance(deployment_id, UUID)  # the sync call, not the coroutine
            ids.append(deployment_id)
            wanted = {s.slug: s.active for s in deployment.schedules or []}
            for existing in client.read_deployment_schedules(deployment_id):
                if existing.slug in wanted:
                    if existing.active != wanted[existing.slug]:
                        client.update_deployment_schedule(
                            deployment_id, existing.id, active=wanted[existing.slug]
                        )
                else:  # from an earlier serve with other schedules, or with --no-schedules
                    client.delete_deployment_schedule(deployment_id, existing.id)
        for deployment_id in ids:
            client.resume_deployment(deployment_id)


def ensure_training_slots(slots: int) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(TRAINING_LIMIT, slots)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.stack.deployments", description=__doc__)
    parser.add_argument("--spec", default=str(DEFAULT_SPEC), help="prefect.yaml to read deployments from")
    parser.add_argument("--no-schedules", action="store_true", help="serve without the cron schedules")
    parser.add_argument("--training-slots", type=int, default=1, help="trainings allowed at once (GPUs)")
    parser.add_argument("--limit", type=int, default=8, help="flow runs this process runs at once")
    parser.add_argument("--ready-file", help="written once the deployments are registered and resumed")
    args = parser.parse_args(argv)
    deployments = build(load_spec(args.spec), schedules=not args.no_schedules)
    ensure_training_slots(args.training_slots)
    apply_and_resume(deployments)
    if args.ready_file:  # what `peftflow serve` waits for
        Path(args.ready_file).write_text(str(os.getpid()), encoding="utf-8")
    serve(*deployments, limit=args.limit)


if __name__ == "__main__":
    main()
