"""Data-changed events: what starts a `retrain` besides its cron.

New data is the reason to retrain. `peftflow notify-data CONFIG` (or `notify_data(params)` from a data
pipeline) fingerprints the recipe's data the way the tokenize step does and emits one Prefect event:

    event     peftflow.data.changed
    resource  prefect.resource.id   = peftflow.data.<16 hex naming the data source>
              prefect.resource.name = the source (files, or Hub id / folder @ revision)
    payload   fingerprint  the raw data's fingerprint (TokenizedData.fingerprint)
              params       the recipe, as the flows take it (no secrets: those live in the environment)

The `retrain` deployment's trigger (infra/prefect.yaml) runs `retrain` with the event's recipe and
fingerprint (its policy stays the deployment's). `retrain` skips when data and recipe are those of its
last trained run, so a second event with the same fingerprint does not train again; a retrain firing
while one runs waits for it (the deployment's concurrency limit, ENQUEUE) and then skips or trains.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any

from flows.params import FinetuneParams

DATA_CHANGED = "peftflow.data.changed"
RESOURCE_PREFIX = "peftflow.data."


def resource_id(params: FinetuneParams) -> str:
    """`peftflow.data.<16 hex>`: names where the data comes from (not its content), so every event
    about one dataset concerns the same resource and a trigger can match one dataset."""
    d = params.data
    files = [os.path.abspath(p) if p else None for p in (d.train_file, d.validation_file, d.test_file)]
    where = [d.dataset, d.config_name, d.data_dir, d.revision, *files]
    return RESOURCE_PREFIX + hashlib.sha256(json.dumps(where).encode()).hexdigest()[:16]


def data_changed_event(params: FinetuneParams) -> Any:
    """The event for the current state of `params`' data (hashing local files; a Hub dataset loads)."""
    from prefect.events import Event

    from flows.steps import data as data_step

    fingerprint, source = data_step.fingerprint(params)
    return Event(
        event=DATA_CHANGED,
        resource={"prefect.resource.id": resource_id(params), "prefect.resource.name": source},
        payload={"fingerprint": fingerprint, "params": params.model_dump(mode="json")},
    )


def notify_data(params: FinetuneParams) -> Any:
    """Emit the data-changed event for `params` to the Prefect server; returns the event sent."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ValueError(
            "no Prefect server to tell: set PREFECT_API_URL (`peftflow serve` prints the export line), "
            "the server whose retrain deployment should react"
        )
    event = data_changed_event(params)
    try:
        asyncio.run(_emit(event))
    except OSError as exc:
        raise RuntimeError(f"could not reach the Prefect server at {PREFECT_API_URL.value()}: {exc}") from exc
    return event


async def _emit(event: Any) -> None:
    from prefect.events.clients import get_events_client

    async with get_events_client() as client:  # a websocket; closing it waits for the send
        await client.emit(event)
