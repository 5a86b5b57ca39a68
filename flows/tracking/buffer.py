"""Training metrics that outlive an outage of the tracking server.

`StepBuffer` sends each training log step to the MLflow run as it arrives, but an unreachable server
never stops or stalls training: a step that cannot be sent (server down or answering 5xx) stays
queued, in order and with its original timestamp, and goes out with the next step once the server
answers again. While the server is down a cheap `/health` probe, retried with growing pauses, stands
in for the MLflow client's own retries (minutes of backoff per call, which would freeze training).
A server that dies after the probe answered, with a step on its way, costs the same: the step goes out
in one HTTP attempt with a short timeout (`OneAttempt`), never through the client's retries.

`flush(timeout_s)` sends whatever is still queued, retrying until the deadline, and raises
`TrackingUnavailable` if the server stays gone: a run must never be closed as complete with steps
missing. Re-sending a step the server already stored is harmless (MLflow ignores an identical
metric: same key, step, timestamp and value).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)
MAX_PAUSE_S = 15.0  # the longest wait between two attempts while the server is down
SEND_TIMEOUT_S = 10.0  # one attempt to send a step: connect and answer
LOG_BATCH_ENDPOINT = "/api/2.0/mlflow/runs/log-batch"


class TrackingUnavailable(ConnectionError):
    """The tracking server stayed unreachable with training metrics still unsent."""


def is_transient(exc: BaseException) -> bool:
    """True for failures a later attempt can fix: no connection, timeouts, 429 and 5xx answers.

    A 4xx answer (a deleted run, a bad value) is permanent: retrying would only hide it.
    """
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return status >= 500 or status == 429
    return isinstance(exc, OSError)  # ConnectionError, TimeoutError, requests' errors


def health_check(uri: str, timeout_s: float = 3.0) -> Callable[[], bool]:
    """A probe of `<uri>/health` for an HTTP tracking server; always true for a local store."""
    if not uri.startswith(("http://", "https://")):
        return lambda: True
    url = uri.rstrip("/") + "/health"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    return healthy


class OneAttempt:
    """`log_batch` as one HTTP attempt of at most `timeout_s` to an MLflow server (the buffer does the
    retrying); for a local store (SQLite, files) the client's own call, which has no network to wait on.

    The request is the one the MLflow client sends (same body, credentials and headers), without its
    retries: ~7 of them, with pauses growing to minutes, during which training would stand still.
    """

    def __init__(self, client: Any, timeout_s: float = SEND_TIMEOUT_S) -> None:
        from mlflow.store.tracking.rest_store import RestStore

        self.client = client
        self.timeout_s = timeout_s
        store = getattr(getattr(client, "_tracking_client", None), "store", None)
        self._store = store if isinstance(store, RestStore) else None

    def log_batch(self, run_id: str, metrics: list[Metric]) -> None:
        if self._store is None:
            self.client.log_batch(run_id, metrics=metrics)
            return
        from mlflow.protos.service_pb2 import LogBatch
        from mlflow.utils.proto_json_utils import message_to_json
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        body = message_to_json(LogBatch(run_id=run_id, metrics=[m.to_proto() for m in metrics]))
        response = http_request(
            self._store.get_host_creds(),
            LOG_BATCH_ENDPOINT,
            "POST",
            max_retries=0,
            timeout=self.timeout_s,
            json=json.loads(body),
        )
        verify_rest_response(response, LOG_BATCH_ENDPOINT)


class StepBuffer:
    """The training log steps of one run, sent in order; those the server could not take wait here."""

    def __init__(self, client: Any, run_id: str, healthy: Callable[[], bool]) -> None:
        self.client = client
        self.run_id = run_id
        self._healthy = healthy
        self._pending: list[list[Metric]] = []
        self._failures = 0  # consecutive failed attempts
        self._retry_at = 0.0  # monotonic time of the next attempt while the server is down
        self._down_since: float | None = None

    @property
    def pending_steps(self) -> list[int]:
        return [batch[0].step for batch in self._pending]

    def add(self, metrics: dict[str, float], step: int) -> None:
        """Queue one step's metrics and send the queue unless the server is known to be down."""
        if not metrics:
            return
        now = int(time.time() * 1000)
        self._pending.append([Metric(k, float(v), now, step) for k, v in metrics.items()])
        if time.monotonic() >= self._retry_at:
            self._send()

    def flush(self, timeout_s: float) -> None:
        """Send every queued step, retrying for up to `timeout_s` seconds; raise `TrackingUnavailable`
        if some are still unsent then."""
        deadline = time.monotonic() + timeout_s
        while self._pending and not self._send():
            wait = min(self._retry_at, deadline) - time.monotonic()
            if time.monotonic() >= deadline:
                break
            time.sleep(max(wait, 0.2))
        if self._pending:
            steps = self.pending_steps
            raise TrackingUnavailable(
                f"the MLflow tracking server has been unreachable for "
                f"{time.monotonic() - (self._down_since or time.monotonic()):.0f} s: {len(steps)} training "
                f"log steps ({steps[0]}..{steps[-1]}) of run {self.run_id} could not be recorded within "
                f"tracking.flush_timeout_s={timeout_s:g}. Start the server again and rerun the same "
                "parameters: training resumes from its last checkpoint"
            )

    def _send(self) -> bool:
        """Try the queue once, oldest step first; True when it is empty."""
        if not self._healthy():
            self._failed("it does not answer /health")
            return False
        while self._pending:
            try:
                self.client.log_batch(self.run_id, metrics=self._pending[0])
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._failed(type(exc).__name__)  # not its text: a URI may carry credentials
                return False
            self._pending.pop(0)
        if self._down_since is not None:
            logger.warning("MLflow tracking server is back: the buffered training steps are recorded")
        self._failures, self._retry_at, self._down_since = 0, 0.0, None
        return True

    def _failed(self, why: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "MLflow tracking server unreachable (%s): training goes on and its metrics are kept "
                "until the server answers again",
                why,
            )
        self._failures += 1
        self._retry_at = time.monotonic() + min(2.0 ** (self._failures - 1), MAX_PAUSE_S)
