"""Training steps through an outage of the tracking server: held back in order, sent when it answers.

A stand-in client and health probe play the server; tests/infra/test_failures.py kills the real one.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from mlflow.exceptions import MlflowException, RestException

from flows.tracking import buffer as buffer_module
from flows.tracking.buffer import StepBuffer, TrackingUnavailable, is_transient


class Server:
    """Stores what `log_batch` sends while `up`; refuses (as a dead server's connection does) when not."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0
        self.stored: list[tuple[str, int, float, int]] = []

    def healthy(self) -> bool:
        return self.up

    def log_batch(self, run_id: str, metrics: list[Any]) -> None:
        self.calls += 1
        if not self.up:
            raise MlflowException("API request to http://127.0.0.1:5000 failed: Connection refused")
        self.stored += [(m.key, m.step, m.value, m.timestamp) for m in metrics]


def test_steps_wait_while_the_server_is_down_and_go_out_in_order_once_it_answers() -> None:
    server = Server()
    steps = StepBuffer(server, "run", server.healthy)
    steps.add({"train_loss": 1.0}, step=1)
    server.up = False
    steps.add({"train_loss": 0.9}, step=2)  # refused: kept
    steps.add({"train_loss": 0.8}, step=3)  # within the pause after a failure: not even tried
    assert steps.pending_steps == [2, 3]
    server.up = True
    steps.flush(timeout_s=10)
    assert [(key, step, value) for key, step, value, _ in server.stored] == [
        ("train_loss", 1, 1.0),
        ("train_loss", 2, 0.9),
        ("train_loss", 3, 0.8),
    ]
    stamps = [stamp for *_, stamp in server.stored]
    assert stamps == sorted(stamps)  # each step keeps the time it was logged, not when it was sent
    assert steps.pending_steps == []


def test_a_down_server_costs_training_no_waiting() -> None:
    server = Server()
    server.up = False
    steps = StepBuffer(server, "run", server.healthy)
    began = time.monotonic()
    for step in range(1, 201):
        steps.add({"train_loss": 1.0 / step}, step=step)
    assert time.monotonic() - began < 2.0
    assert server.calls == 0  # the health probe answered for the server: no client retries
    assert steps.pending_steps == list(range(1, 201))


def test_flush_gives_up_at_its_deadline_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buffer_module, "MAX_PAUSE_S", 0.2)
    server = Server()
    server.up = False
    steps = StepBuffer(server, "run-7", server.healthy)
    for step in (4, 5, 6):
        steps.add({"train_loss": 0.5}, step=step)
    began = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=r"3 training log steps \(4\.\.6\) of run run-7") as err:
        steps.flush(timeout_s=1.0)
    assert 1.0 <= time.monotonic() - began < 5.0
    assert "tracking.flush_timeout_s=1" in str(err.value) and "rerun" in str(err.value)
    assert steps.pending_steps == [4, 5, 6]  # nothing dropped


def test_a_refusal_that_retrying_cannot_fix_is_raised_at_once() -> None:
    class DeletedRun(Server):
        def log_batch(self, run_id: str, metrics: list[Any]) -> None:
            raise RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'run' not found"})

    server = DeletedRun()
    steps = StepBuffer(server, "run", server.healthy)
    with pytest.raises(RestException, match="not found"):
        steps.add({"train_loss": 1.0}, step=1)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (MlflowException("API request failed: Max retries exceeded"), True),  # INTERNAL_ERROR: 500
        (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}), True),
        (RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}), True),
        (ConnectionRefusedError(111, "refused"), True),
        (RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}), False),
        (RestException({"error_code": "PERMISSION_DENIED", "message": "no"}), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda v: getattr(v, "error_code", type(v).__name__) if isinstance(v, BaseException) else str(v),
)
def test_only_what_a_later_attempt_can_fix_is_held_back(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


class DyingServer:
    """An HTTP MLflow stand-in on loopback whose `/health` answers while its log-batch requests are
    cut off mid-way (read, then the connection closed with no answer), as when the server is killed
    between the buffer's probe and its send; `accept = True` makes it store them instead."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.accept = False
        self.attempts = 0
        self.stored: list[dict[str, Any]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # /health
                self._answer(b"OK")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.attempts += 1
                if not owner.accept:
                    self.close_connection = True
                    self.connection.shutdown(2)  # no status line: the client sees the peer hang up
                    return
                owner.stored.append(json.loads(body))
                self._answer(b"{}")

            def _answer(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_a_server_dying_with_a_step_on_its_way_does_not_stall_training() -> None:
    from mlflow.tracking import MlflowClient

    from flows.tracking.buffer import OneAttempt, health_check

    server = DyingServer()
    try:
        client = MlflowClient(tracking_uri=server.url)
        steps = StepBuffer(OneAttempt(client), "run-1", health_check(server.url))
        began = time.monotonic()
        steps.add({"train_loss": 0.7}, step=1)
        # One attempt, then training goes on: MLflow's own client would retry ~7 times over minutes.
        assert time.monotonic() - began < 5.0
        assert server.attempts == 1 and steps.pending_steps == [1]
        server.accept = True
        steps.flush(timeout_s=10)
    finally:
        server.httpd.shutdown()
    # The request is the client's own log-batch: the run, and each metric with its step and time.
    (sent,) = server.stored
    assert sent["run_id"] == "run-1"
    (metric,) = sent["metrics"]
    assert (metric["key"], metric["value"], int(metric["step"])) == ("train_loss", 0.7, 1)
    assert int(metric["timestamp"]) > 0
