"""The program each `accelerate launch` process runs (see flows.distributed.launch): one call of the train step.

`python -m flows.distributed.worker <launch_dir>` reads `<launch_dir>/job.json` (params, tokenized data,
run directory, MLflow run id) and runs `flows.steps.train.train` — every rank does, as DDP needs.
Rank 0 alone streams the Trainer logs to the MLflow run and writes `<launch_dir>/result.json` (the
`TrainResult`), atomically, for the parent process to read back. Both files go through
`write_json_atomic`, so a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import tempfile
from typing import Any

JOB_FILE = "job.json"
RESULT_FILE = "result.json"


def write_json_atomic(path: str, value: Any) -> None:
    """Write `value` as JSON to a temp file next to `path`, then rename it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(value, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rank() -> int:
    """This process's global rank: from the process group once it exists, else the launcher's RANK."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m flows.distributed.worker <launch_dir>  (started by flows.distributed.launch)",
            file=sys.stderr,
        )
        return 2
    launch_dir = args[0]
    with open(os.path.join(launch_dir, JOB_FILE), encoding="utf-8") as fh:
        job = json.load(fh)

    from flows.params import FinetuneParams
    from flows.steps import TokenizedData
    from flows.steps import train as train_step

    params = FinetuneParams.model_validate(job["params"])
    data = TokenizedData(**job["data"])
    on_log: train_step.LogFn | None = None
    on_end: train_step.EndFn | None = None
    if rank() == 0:
        from flows import tracking

        tracker = tracking.RunTracker(job["run_id"])
        on_log = tracker.log_step
        on_end = functools.partial(tracker.flush_steps, params.tracking.flush_timeout_s)
    result = train_step.train(params, data, job["run_dir"], on_log=on_log, on_end=on_end)
    if rank() == 0:
        write_json_atomic(os.path.join(launch_dir, RESULT_FILE), dataclasses.asdict(result))
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
