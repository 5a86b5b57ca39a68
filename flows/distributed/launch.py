"""Multi-process training through `accelerate launch`: DDP over GPUs (nccl) or CPU processes (gloo).

The flow's process stays the orchestrator. `train` writes the run's inputs to
`<run_dir>/launch/job.json`, runs `accelerate launch ... -m flows.distributed.worker <run_dir>/launch` as a
child process (streaming its output), and reads back the `TrainResult` that rank 0 wrote to
`<run_dir>/launch/result.json`. Every rank runs the ordinary train step; only rank 0 logs to MLflow
and writes files (flows.distributed.worker, flows.steps.train).

- `train.accelerate_config` picks the strategy (infra/accelerate/*.yaml); `train.num_processes` always
  overrides its `num_processes`. Without a config, N > 1 processes go through torchrun
  (`--multi_gpu`); on a machine without GPUs that means CPU processes with gloo.
- On one machine the rendezvous port is a free port picked here, so two runs never collide. A
  multi-machine config keeps its main_process_ip/port, which every machine must agree on; the flow
  starts the processes of its own machine, the others run the command it logs (shared filesystem).
- `check_config` validates the config before any model loads; the flow's preflight calls it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from typing import Any

from flows import tracking
from flows.distributed.worker import JOB_FILE, RESULT_FILE, write_json_atomic
from flows.params import FinetuneParams
from flows.steps import TokenizedData, TrainResult

logger = logging.getLogger(__name__)
TAIL_LINES = 40
STOP_GRACE_S = 30.0
_LINE_CHARS = 400  # progress bars redraw with \r: keep only the end of such a line


def load_config(path: str) -> Any:
    """The accelerate config at `path`, read by accelerate's own loader (unknown keys are errors)."""
    from accelerate.commands.config.config_args import load_config_from_file

    if not os.path.isfile(path):
        raise ValueError(
            f"train.accelerate_config={path!r} does not exist; use one of infra/accelerate/*.yaml "
            "or a file written by `accelerate config`"
        )
    try:
        return load_config_from_file(path)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise ValueError(
            f"train.accelerate_config={path!r} is not a valid accelerate config: {exc}"
        ) from None
    except Exception as exc:  # yaml/json syntax errors have their own exception types
        raise ValueError(f"train.accelerate_config={path!r} cannot be parsed: {exc}") from None


def check_config(params: FinetuneParams) -> None:
    """Refuse, before any heavy work, an accelerate config this pipeline would run wrongly."""
    t = params.train
    if t.launcher != "accelerate" or t.accelerate_config is None:
        return
    config = load_config(t.accelerate_config)
    where = f"train.accelerate_config={t.accelerate_config!r}"
    kind = str(getattr(config.distributed_type, "value", config.distributed_type))
    if str(getattr(config.compute_environment, "value", "")) != "LOCAL_MACHINE":
        raise ValueError(f"{where}: only compute_environment LOCAL_MACHINE is supported")
    if kind == "MULTI_CPU" and not (config.mpirun_config or {}).get("mpirun_hostfile"):
        raise ValueError(
            f"{where}: accelerate starts MULTI_CPU processes through mpirun (mpirun_config.mpirun_hostfile); "
            "without it one process trains. For CPU processes with gloo use infra/accelerate/cpu-gloo.yaml"
        )
    if kind == "MULTI_GPU" and t.num_processes < 2:
        raise ValueError(f"{where} is multi-process: set train.num_processes >= 2 (got {t.num_processes})")
    if kind == "FSDP":
        if config.use_cpu:
            # accelerate turns FSDP on for GPU-like devices only: on CPU its processes would train as
            # plain data parallel (MULTI_CPU) while the run claims FSDP. Checked on accelerate 1.15.
            raise ValueError(
                f"{where}: accelerate runs FSDP on GPUs only; with use_cpu it would silently train data "
                "parallel instead. Use infra/accelerate/cpu-gloo.yaml for CPU processes"
            )
        fsdp = config.fsdp_config or {}
        version = int(fsdp.get("fsdp_version", 1))
        if version == 1 and not fsdp.get("fsdp_use_orig_params", False):
            raise ValueError(
                f"{where}: FSDP1 flattens frozen base weights and trainable LoRA weights into one parameter; "
                "set fsdp_config.fsdp_version: 2 (as infra/accelerate/fsdp.yaml), or fsdp_use_orig_params: true"
            )
        if "FULL_STATE_DICT" not in str(fsdp.get("fsdp_state_dict_type", "FULL_STATE_DICT")):
            raise ValueError(
                f"{where}: the adapter is saved from the full state dict gathered on rank 0; set "
                "fsdp_config.fsdp_state_dict_type: FULL_STATE_DICT"
            )
    if kind == "DEEPSPEED" and _zero_stage(config) == 3:
        # ZeRO-3 partitions parameters behind DeepSpeed's own gather API, which the adapter save does not
        # call (and DeepSpeed is not installed where this is tested); FSDP2 is the sharded path here.
        raise ValueError(
            f"{where} uses DeepSpeed ZeRO-3, whose partitioned parameters the adapter save does not gather; "
            "use infra/accelerate/fsdp.yaml (FSDP2) to shard, or deepspeed-zero2.yaml"
        )
    if kind == "DEEPSPEED":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ValueError(f"{where} needs DeepSpeed: pip install deepspeed")
    if config.num_machines > 1 and not config.main_process_ip:
        raise ValueError(f"{where}: num_machines > 1 needs main_process_ip (the machine of rank 0)")


def train(params: FinetuneParams, data: TokenizedData, run_dir: str, run_id: str) -> TrainResult:
    """Train in a child process — `accelerate launch`, or one plain process when only
    `train.timeout_minutes` asks for a child — and return rank 0's TrainResult.

    Past `train.timeout_minutes` the whole process tree is stopped (SIGTERM, then SIGKILL) and
    `TrainingTimeout` is raised; the checkpoints stay, so rerunning the run resumes from the newest.
    """
    distributed = params.train.launcher == "accelerate"
    config = (
        load_config(params.train.accelerate_config)
        if distributed and params.train.accelerate_config
        else None
    )
    # Absolute: the logged command must work from anywhere (e.g. on the other machines of a multi-node run).
    launch_dir = os.path.abspath(os.path.join(run_dir, "launch"))
    os.makedirs(launch_dir, exist_ok=True)
    result_path = os.path.join(launch_dir, RESULT_FILE)
    if os.path.exists(result_path):
        os.unlink(result_path)  # a result left by an earlier launch must never be read as this one's
    job = {
        "params": params.model_dump(mode="json"),
        "data": dataclasses.asdict(data),
        "run_dir": run_dir,
        "run_id": run_id,
    }
    write_json_atomic(os.path.join(launch_dir, JOB_FILE), job)
    one_machine = config is None or config.num_machines <= 1
    if distributed:
        cmd = launch_command(params, launch_dir, port=free_port() if one_machine else None)
    else:
        cmd = [sys.executable, "-m", "flows.distributed.worker", launch_dir]
    logger.info("launching %d training process(es): %s", params.train.num_processes, shlex.join(cmd))
    timeout_s = params.train.timeout_minutes * 60 if params.train.timeout_minutes else None
    returncode, tail, timed_out = _run(cmd, _child_env(config), timeout_s)
    if timed_out:
        raise TrainingTimeout(
            f"training ran past train.timeout_minutes={params.train.timeout_minutes} and was stopped with "
            f"every process it started; its checkpoints are kept in {os.path.join(run_dir, 'checkpoints')}, "
            "so rerunning the run resumes from the newest"
        )
    if returncode != 0:
        raise RuntimeError(
            f"training process failed (exit code {returncode}); the end of its output:\n"
            + "".join(tail)
            + f"\ncommand: {shlex.join(cmd)}"
        )
    if not os.path.isfile(result_path):
        raise RuntimeError(f"training exited 0 but rank 0 wrote no {result_path}")
    with open(result_path, encoding="utf-8") as fh:
        return TrainResult(**json.load(fh))


def launch_command(params: FinetuneParams, launch_dir: str, port: int | None) -> list[str]:
    """The `accelerate launch` command line running flows.distributed.worker on `launch_dir`."""
    t = params.train
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if t.accelerate_config:
        cmd += ["--config_file", t.accelerate_config]
    else:
        # What `accelerate config` would ask; spelled out so accelerate does not warn about defaults.
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if t.num_processes > 1:
            cmd.append("--multi_gpu")  # torchrun: one process per GPU, or CPU processes with gloo
    cmd += ["--num_processes", str(t.num_processes)]
    if port is not None:
        cmd += ["--main_process_port", str(port)]
    return [*cmd, "-m", "flows.distributed.worker", launch_dir]


def free_port() -> int:
    """A TCP port free on this machine right now, for the rendezvous of rank 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _zero_stage(config: Any) -> int | None:
    ds = config.deepspeed_config or {}
    path = ds.get("deepspeed_config_file")
    if path:
        if not os.path.isfile(path):
            raise ValueError(f"deepspeed_config_file={path!r} in train.accelerate_config does not exist")
        with open(path, encoding="utf-8") as fh:
            stage = json.load(fh).get("zero_optimization", {}).get("stage")
        return int(stage) if isinstance(stage, int | str) and str(stage).isdigit() else None
    return int(ds.get("zero_stage", 2))  # accelerate's default stage


def _child_env(config: Any) -> dict[str, str]:
    env = dict(os.environ)
    # The child logs to the same MLflow store, resolved here (credentials stay in the environment).
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    env["PYTHONUNBUFFERED"] = "1"
    if config is not None and config.use_cpu:
        # torchrun does not pass the config's use_cpu on; the train step and Trainer read this.
        env["ACCELERATE_USE_CPU"] = "true"
    return env


class TrainingTimeout(TimeoutError):
    """Training ran past train.timeout_minutes and was stopped."""


def _run(cmd: list[str], env: dict[str, str], timeout_s: float | None = None) -> tuple[int, deque[str], bool]:
    """Run `cmd`, echoing its output to stderr; returns the exit code, the last lines, and whether it
    was stopped for running past `timeout_s`."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    # A session of its own, so an interrupted flow stops the launcher and every rank it started.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _stop(proc)

    watchdog = threading.Timer(timeout_s, expire) if timeout_s else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line[-_LINE_CHARS:])
        return proc.wait(), tail, expired.is_set()
    except BaseException:
        _stop(proc)
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop the child's whole process group: SIGTERM (STOP_GRACE_S to exit, e.g. to close files),
    then SIGKILL for anything left, ranks that outlived their launcher included."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
