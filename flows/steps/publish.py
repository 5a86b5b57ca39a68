"""Publish step: push the adapter and a model card to a Hugging Face Hub repo.

The token comes from `HF_TOKEN` only. Transient Hub errors (429 and 5xx) are retried with exponential
backoff; anything else fails at once with a clear message. The adapter directory is never modified:
the card is written into a copy that is uploaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flows.params import FinetuneParams

T = TypeVar("T")
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def with_retries(
    call: Callable[[], T],
    attempts: int = 4,
    base_delay_s: float = 1.0,
    what: str = "Hub call",
    max_delay_s: float = 30.0,
) -> T:
    """Run `call`, retrying 429/5xx HTTP errors up to `attempts` tries in all.

    The wait before try n+1 is the server's `Retry-After` (seconds) when it sends one, else
    `base_delay_s * 2**(n-1)`; either is capped at `max_delay_s` so a hostile header cannot stall a run.
    A 401 becomes a `PermissionError` at once; other errors are raised unchanged.
    """
    from huggingface_hub.errors import HfHubHTTPError

    if attempts < 1:
        raise ValueError(f"attempts={attempts}: use 1 or more")

    for attempt in range(1, attempts + 1):
        try:
            return call()
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status == 401:
                raise PermissionError(
                    f"{what}: the Hub rejected the token (HTTP 401); check HF_TOKEN has write access"
                ) from None
            if status not in RETRY_STATUS or attempt == attempts:
                raise
            retry_after = exc.response.headers.get("Retry-After") if exc.response is not None else None
            if retry_after and retry_after.strip().isdigit():
                delay = float(retry_after)
            else:
                delay = base_delay_s * 2 ** (attempt - 1)
            time.sleep(min(delay, max_delay_s))
    raise AssertionError("unreachable")


def model_card_metadata(params: FinetuneParams, metrics: dict[str, float]) -> dict[str, Any]:
    meta: dict[str, Any] = {"tags": ["peft", params.peft.method, "peftcore", params.model.task]}
    if params.data.dataset:
        meta["datasets"] = [params.data.dataset]
    if metrics:
        meta["metrics"] = sorted(metrics)
    return meta


def publish(
    params: FinetuneParams,
    adapter_dir: str,
    metrics: dict[str, float],
    fingerprint: str,
    base_delay_s: float = 1.0,
    attempts: int = 4,
    max_delay_s: float = 30.0,
) -> str:
    """Create the repo if needed and upload the adapter with its card; returns the commit id.

    Each Hub call (create_repo, upload_folder) gets `attempts` tries; see `with_retries` for the
    backoff (`base_delay_s`, capped at `max_delay_s`).
    """
    from huggingface_hub import HfApi

    from peftcore.hub import write_model_card

    repo_id = params.publish.repo_id
    if not repo_id:
        raise ValueError("publish.repo_id is empty; nothing to publish")
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ValueError("HF_TOKEN is not set; the Hub token comes from the environment only")
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as fh:
        base = json.load(fh).get("base_model_name_or_path")
    if not base or os.path.isabs(base) or base.startswith(".") or os.path.exists(base):
        raise ValueError(
            f"the adapter's base_model_name_or_path is {base!r}, not a Hub id; set model.hub_id so others can "
            "load the adapter from the Hub"
        )
    endpoint = params.publish.endpoint or os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory() as tmp:
        staged = os.path.join(tmp, "adapter")
        shutil.copytree(adapter_dir, staged)
        card_extra = model_card_metadata(params, metrics)
        write_model_card(staged, base, tags=card_extra.pop("tags"), extra=card_extra)
        _append_results(os.path.join(staged, "README.md"), metrics, fingerprint)
        with_retries(
            lambda: api.create_repo(
                repo_id, private=params.publish.private, exist_ok=True, repo_type="model"
            ),
            attempts=attempts,
            base_delay_s=base_delay_s,
            max_delay_s=max_delay_s,
            what="create_repo",
        )
        info = with_retries(
            lambda: api.upload_folder(
                repo_id=repo_id,
                folder_path=staged,
                commit_message=params.publish.commit_message,
                repo_type="model",
            ),
            attempts=attempts,
            base_delay_s=base_delay_s,
            max_delay_s=max_delay_s,
            what="upload_folder",
        )
    return str(info.oid)


def _append_results(card_path: str, metrics: dict[str, float], fingerprint: str) -> None:
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    with open(card_path, "a", encoding="utf-8") as fh:
        fh.write(
            f"\n## Evaluation\n\n| metric | value |\n|---|---|\n{rows}\n\nDataset fingerprint: `{fingerprint}`\n"
        )


def commit_url(params: FinetuneParams, commit_id: str) -> str:
    """The web page of a commit made by `publish` (on the configured endpoint, else HF_ENDPOINT / the Hub)."""
    from huggingface_hub import constants

    endpoint = params.publish.endpoint or constants.ENDPOINT
    return f"{endpoint.rstrip('/')}/{params.publish.repo_id}/commit/{commit_id}"
