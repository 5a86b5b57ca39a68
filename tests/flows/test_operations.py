"""Operations: network retries, the training timeout, the strict training slot, system metrics."""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from flows import finetune as finetune_module
from flows.distributed.launch import TrainingTimeout
from flows.finetune import TRAINING_LIMIT, ensure_training_limit, finetune, training_slot
from flows.params import FinetuneParams
from flows.retries import is_network_error
from tests.flows import fixtures

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _http_error(status: int, cls: type[HfHubHTTPError] = HfHubHTTPError) -> HfHubHTTPError:
    request = httpx.Request("GET", "https://huggingface.co/api/models/org/name")
    return cls(f"{status} error", response=httpx.Response(status, request=request))


def _wrapped(cause: BaseException) -> ValueError:
    """A step's error naming the parameter, raised from the underlying one (as the steps do)."""
    try:
        raise cause
    except BaseException as exc:
        try:
            raise ValueError("model.name_or_path='org/name' could not be loaded") from exc
        except ValueError as wrapped:
            return wrapped


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError("read timed out"), True),
        (httpx.ConnectError("connection reset"), True),
        (_http_error(503), True),
        (_http_error(429), True),
        (_wrapped(_http_error(502)), True),
        (_wrapped(httpx.ReadTimeout("slow")), True),
        (_http_error(404, RepositoryNotFoundError), False),  # retrying cannot create the repo
        (_http_error(401), False),  # nor fix a refused token
        (_wrapped(_http_error(403)), False),
        (ValueError("data.text_column='txt' is not a column"), False),
        (KeyError("label"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_only_network_failures_are_retried(exc: BaseException, expected: bool) -> None:
    assert is_network_error(exc) is expected


def _fast_retries(task: Any) -> Any:
    return task.with_options(retry_delay_seconds=0, retry_jitter_factor=None)


@pytest.mark.parametrize(
    ("failure", "calls", "succeeds"),
    [
        (lambda: ConnectionResetError(104, "reset by peer"), 3, True),  # two failures, then it works
        (lambda: _http_error(503), 3, True),
        (lambda: ValueError("data.text_column='txt' is not a column"), 1, False),  # at once, no retry
        (lambda: _http_error(404, RepositoryNotFoundError), 1, False),
    ],
    ids=["reset", "503", "bad-input", "404"],
)
def test_network_bound_tasks_retry_transient_failures_only(
    monkeypatch: pytest.MonkeyPatch, failure: Any, calls: int, succeeds: bool
) -> None:
    seen: list[int] = []

    def flaky_wrap(params: Any, label_names: Any) -> str:
        seen.append(1)
        if len(seen) < 3:
            raise failure()
        return "wrapped"

    monkeypatch.setattr(finetune_module.model_step, "wrap", flaky_wrap)
    task = _fast_retries(finetune_module.wrap_task)
    if succeeds:
        assert task(None, None) == "wrapped"
    else:
        with pytest.raises(type(failure())):
            task(None, None)
    assert len(seen) == calls


def test_tokenize_and_publish_tasks_retry_on_the_network_too() -> None:
    for task in (finetune_module.tokenize_task, finetune_module.publish_task, finetune_module.wrap_task):
        assert task.retries == 3 and task.retry_condition_fn is not None, task.name
    # Training and evaluation are not network-bound: a failure there is not retried.
    for task in (finetune_module.train_task, finetune_module.evaluate_task):
        assert task.retries == 0, task.name


def test_training_slot_is_strict_and_created_when_missing() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectNotFound):
            client.delete_global_concurrency_limit_by_name(TRAINING_LIMIT)
        with training_slot():  # a server without the limit: created with one slot, then occupied
            limit = client.read_global_concurrency_limit_by_name(TRAINING_LIMIT)
            assert limit.limit == 1 and limit.active_slots == 1
        assert client.read_global_concurrency_limit_by_name(TRAINING_LIMIT).active_slots == 0
        # A team's own setting is kept: the limit is only created when missing.
        client.update_global_concurrency_limit(TRAINING_LIMIT, GlobalConcurrencyLimitUpdate(limit=2))
        ensure_training_limit()
        assert client.read_global_concurrency_limit_by_name(TRAINING_LIMIT).limit == 2
        client.update_global_concurrency_limit(TRAINING_LIMIT, GlobalConcurrencyLimitUpdate(limit=1))


# Imported by the training child through PYTHONPATH: at global step HANG_AT the Trainer starts a
# grandchild process and then hangs, as a deadlocked collective or a stuck data loader would.
_HANG_HOOK = """
import os
if os.environ.get("PEFTFLOW_TEST_HANG_AT"):
    import subprocess, sys, time
    import transformers

    _step = transformers.Trainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step >= int(os.environ["PEFTFLOW_TEST_HANG_AT"]):
            grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
            with open(os.environ["PEFTFLOW_TEST_PIDS"], "w") as fh:
                fh.write(f"{os.getpid()} {grandchild.pid}")
            time.sleep(3600)
        return _step(self, *args, **kwargs)

    transformers.Trainer.training_step = training_step
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(*pids: int, within_s: float = 10.0) -> bool:
    """True once no process of `pids` runs (a killed process needs a moment to exit on a busy machine)."""
    deadline = time.monotonic() + within_s
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow
def test_timeout_kills_the_process_tree_and_the_rerun_resumes(
    mlflow_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mlflow_store
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(_HANG_HOOK))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PEFTFLOW_TEST_HANG_AT", "3")  # after checkpoint-2 is written
    monkeypatch.setenv("PEFTFLOW_TEST_PIDS", str(tmp_path / "pids"))
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    timeout_minutes = 0.75
    params = FinetuneParams.model_validate(
        {
            "model": {"name_or_path": fixtures.model_dir(tmp_path / "models", "seq_cls"), "task": "seq_cls"},
            "data": {
                "train_file": fixtures.write_jsonl(tmp_path / "train.jsonl", fixtures.rows("seq_cls", 16)),
                "test_fraction": 0.25,
            },
            "peft": {"r": 2},
            "train": {
                "max_steps": 6,
                "batch_size": 4,
                "save_steps": 2,
                "logging_steps": 1,
                "eval_every": "no",
                "timeout_minutes": timeout_minutes,
            },
            "eval": {"metrics": ["accuracy"]},
            "tracking": {"experiment": "timeout"},
            "output_dir": str(tmp_path / "out"),
        }
    )
    started = time.monotonic()
    with pytest.raises(TrainingTimeout, match=r"train.timeout_minutes=0.75"):
        finetune(params)
    elapsed = time.monotonic() - started
    assert timeout_minutes * 60 <= elapsed < timeout_minutes * 60 + 60
    worker, grandchild = (int(p) for p in (tmp_path / "pids").read_text().split())
    assert _gone(worker, grandchild), "a process of the training tree outlived it"

    experiment = client.get_experiment_by_name("timeout")
    (failed,) = client.search_runs([experiment.experiment_id])
    assert failed.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(failed.info.run_id, "train_loss")] == [1, 2, 3]
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir()
    assert not (run_dir / "adapter").exists()

    # The same run again, healthy: it resumes from the checkpoint the timeout left (the timeout is not
    # part of the run's identity, so a longer one reruns the same run).
    monkeypatch.delenv("PEFTFLOW_TEST_HANG_AT")
    summary = finetune(
        params.model_copy(update={"train": params.train.model_copy(update={"timeout_minutes": 5})})
    )
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_id != failed.info.run_id
    assert run.data.tags["train.resumed_from"] == "checkpoint-2"
    # It records the whole training: the checkpoint's steps (1, 2), then those it trained itself.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    # Both runs carry MLflow system metrics (sampled every second here, every 10 s by default).
    for run_id in (failed.info.run_id, run.info.run_id):
        metrics = client.get_run(run_id).data.metrics
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics)


def test_timeout_of_a_stand_in_child_stops_its_whole_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchdog alone, on a child that ignores SIGTERM and leaves a grandchild: both are gone."""
    from flows.distributed import launch

    pids = tmp_path / "pids"
    script = textwrap.dedent(
        f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        open({str(pids)!r}, "w").write(f"{{grandchild.pid}}")
        print("started", flush=True)
        time.sleep(3600)
        """
    )
    monkeypatch.setattr(launch, "STOP_GRACE_S", 1.0)
    started = time.monotonic()
    returncode, tail, timed_out = launch._run([sys.executable, "-c", script], dict(os.environ), 3.0)
    elapsed = time.monotonic() - started
    assert timed_out and returncode == -9 and "started\n" in tail  # SIGTERM ignored: SIGKILL ended it
    assert 3.0 <= elapsed < 3.0 + 30
    assert _gone(int(pids.read_text()))
