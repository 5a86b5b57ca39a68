"""Retries for the tasks that talk to the network (the Hub: datasets, models, publishing).

A task retries only when its failure was the network's: a connection refused or reset, a timeout, an
HTTP 429 or 5xx (found anywhere in the exception's chain, since the steps wrap errors to name the
parameter). Anything else — a missing column, a bad template, an unknown repo (404), a refused token
(401/403) — fails at once: retrying cannot fix it. Delays grow 10 s, 30 s, 90 s, each ±50%.
"""

from __future__ import annotations

from typing import Any

RETRIES = 3
DELAYS_S = [10.0, 30.0, 90.0]
JITTER = 0.5
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


def is_network_error(exc: BaseException | None) -> bool:
    """True when `exc` or one of its causes is a transient network failure."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionError | TimeoutError):
            return True
        status = _status(exc)
        if status is not None:
            return status in _RETRY_STATUS
        name = type(exc).__name__
        if name in ("ConnectError", "ReadTimeout", "ConnectTimeout", "RemoteProtocolError", "ReadError"):
            return True  # httpx / requests transport errors, without importing them
        exc = exc.__cause__ or exc.__context__
    return False


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def retry_on_network_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: retry the task only for a network failure."""
    try:
        state.result()
    except BaseException as exc:
        return is_network_error(exc)
    return False


# Options for @task(...) on the network-bound tasks.
NETWORK_RETRIES: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": DELAYS_S,
    "retry_jitter_factor": JITTER,
    "retry_condition_fn": retry_on_network_error,
}
