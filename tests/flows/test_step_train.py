"""The train step resumes an interrupted run from its newest adapter-only checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flows.params import FinetuneParams
from flows.steps.data import tokenize
from flows.steps.train import train
from tests.flows import fixtures


class Crash(RuntimeError):
    pass


def test_rerun_resumes_from_newest_checkpoint_and_cleans_up(tmp_path: Path) -> None:
    rows = fixtures.rows("seq_cls", 16)
    train_file = fixtures.write_jsonl(tmp_path / "train.jsonl", rows)
    params = FinetuneParams.model_validate(
        {
            "model": {"name_or_path": fixtures.model_dir(tmp_path / "models", "seq_cls"), "task": "seq_cls"},
            "data": {"train_file": train_file, "test_fraction": 0.25},
            "peft": {"r": 2},
            "train": {
                "max_steps": 4,
                "batch_size": 4,
                "save_steps": 2,
                "logging_steps": 1,
                "eval_every": "no",
            },
            "eval": {"metrics": ["accuracy"]},
        }
    )
    data = tokenize(params, str(tmp_path / "cache"))
    run_dir = str(tmp_path / "run")

    def crash_after_first_checkpoint(step: int, logs: dict[str, float]) -> None:
        if step >= 3:
            raise Crash("simulated crash")

    with pytest.raises(Crash):
        train(params, data, run_dir, on_log=crash_after_first_checkpoint)
    ckpt = os.path.join(run_dir, "checkpoints", "checkpoint-2")
    assert os.path.isdir(ckpt)
    assert not os.path.exists(os.path.join(run_dir, "adapter"))
    # The checkpoint holds adapter tensors only (LoRA and the classifier copy), never the frozen base.
    keys = load_file(os.path.join(ckpt, "model.safetensors")).keys()
    assert keys and all(".lora_" in k or ".modules_to_save." in k for k in keys)

    logged: list[tuple[int, float]] = []
    result = train(
        params,
        data,
        run_dir,
        on_log=lambda step, logs: logged.extend([(step, logs["loss"])] if "loss" in logs else []),
    )
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-2")
    # The logs cover the whole training: the checkpoint's steps first (as recorded then), then the rest.
    recorded = {h["step"]: h["loss"] for h in result.log_history if "loss" in h}
    assert [step for step, _ in logged] == [1, 2, 3, 4]
    assert dict(logged) == recorded
    assert result.global_step == 4
    assert os.path.isfile(os.path.join(result.adapter_dir, "adapter_model.safetensors"))
    # A finished run leaves no checkpoints: rerunning it trains afresh instead of reusing them.
    assert not os.path.exists(os.path.join(run_dir, "checkpoints"))


def test_a_failing_on_end_keeps_the_last_checkpoint_and_the_rerun_resumes_from_it(tmp_path: Path) -> None:
    params = FinetuneParams.model_validate(
        {
            "model": {"name_or_path": fixtures.model_dir(tmp_path / "models", "seq_cls"), "task": "seq_cls"},
            "data": {
                "train_file": fixtures.write_jsonl(tmp_path / "t.jsonl", fixtures.rows("seq_cls", 16)),
                "test_fraction": 0.25,
            },
            "peft": {"r": 2},
            # 12 training rows, 3 steps an epoch: the last step is not at the end of an epoch.
            "train": {"max_steps": 4, "batch_size": 4, "logging_steps": 1, "eval_every": "no"},
            "eval": {"metrics": ["accuracy"]},
        }
    )
    data = tokenize(params, str(tmp_path / "cache"))
    run_dir = tmp_path / "run"

    def tracking_gone() -> None:
        raise ConnectionError("the tracking server is gone")

    with pytest.raises(ConnectionError, match="gone"):
        train(params, data, str(run_dir), on_end=tracking_gone)
    # Trained to the end, but not finished: the last step's checkpoint stays, no final adapter.
    assert (run_dir / "checkpoints" / "checkpoint-4").is_dir()
    assert not (run_dir / "adapter").exists()

    logged: list[int] = []
    ended: list[bool] = []
    result = train(
        params,
        data,
        str(run_dir),
        on_log=lambda step, logs: logged.extend([step] if "loss" in logs else []),
        on_end=lambda: ended.append(True),
    )
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-4")
    # Nothing more trained (the Trainer, resumed at the last step, would take a fifth): the adapter
    # is exactly the one an uninterrupted training saves.
    assert result.global_step == 4 and logged == [1, 2, 3, 4] and ended == [True]
    assert not (run_dir / "checkpoints").exists()
    whole = train(params, data, str(tmp_path / "uninterrupted"))
    resumed = load_file(os.path.join(result.adapter_dir, "adapter_model.safetensors"))
    expected = load_file(os.path.join(whole.adapter_dir, "adapter_model.safetensors"))
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
