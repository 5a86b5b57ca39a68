"""The train step resumes an interrupted run from its newest adapter-only checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
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

    result = train(params, data, run_dir)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-2")
    assert result.global_step == 4
    assert os.path.isfile(os.path.join(result.adapter_dir, "adapter_model.safetensors"))
    # A finished run leaves no checkpoints: rerunning it trains afresh instead of reusing them.
    assert not os.path.exists(os.path.join(run_dir, "checkpoints"))
