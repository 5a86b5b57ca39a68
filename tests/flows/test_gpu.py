"""GPU paths: bf16 training on CUDA, and 2-process DDP (nccl) when two GPUs exist. Skipped without a GPU.

Run them on a GPU machine with `bench/gpu_check.sh` (it also runs the LoRA step benchmark on CUDA).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from flows.params import FinetuneParams
from flows.steps.data import tokenize
from flows.steps.train import pick_precision, train
from tests.flows import fixtures

pytestmark = pytest.mark.gpu
CONFIGS = Path(__file__).resolve().parents[2] / "infra" / "accelerate"


def _params(tmp_path: Path, **train: object) -> FinetuneParams:
    return FinetuneParams.model_validate(
        {
            "model": {"name_or_path": fixtures.model_dir(tmp_path / "models", "seq_cls"), "task": "seq_cls"},
            "data": {
                "train_file": fixtures.write_jsonl(tmp_path / "train.jsonl", fixtures.rows("seq_cls", 32)),
                "test_fraction": 0.25,
            },
            "peft": {"r": 4, "lora_dropout": 0.0},
            "train": {"max_steps": 6, "batch_size": 8, "logging_steps": 1, "eval_every": "no", **train},
            "eval": {"metrics": ["accuracy"]},
            "output_dir": str(tmp_path / "out"),
        }
    )


def test_auto_precision_is_bf16_on_a_capable_gpu(tmp_path: Path) -> None:
    device, precision = pick_precision(_params(tmp_path))
    assert device == "cuda"
    assert precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


def test_training_on_the_gpu_learns_and_saves_an_fp32_adapter(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    params = _params(tmp_path, learning_rate=5e-3)
    data = tokenize(params, str(tmp_path / "cache"))
    result = train(params, data, str(tmp_path / "run"))
    assert result.device == "cuda" and result.peak_memory_mb > 0
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 6 and all(loss == loss for loss in losses)  # finite, no NaN from bf16
    weights = load_file(str(Path(result.adapter_dir) / "adapter_model.safetensors"))
    assert weights and all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ddp_over_two_gpus_matches_one_process(tmp_path: Path, mlflow_store: Any) -> None:
    from flows.distributed import launch
    from flows.steps import TokenizedData

    one = _params(tmp_path, batch_size=8, precision="fp32")
    data = tokenize(one, str(tmp_path / "cache"))
    single = train(one, data, str(tmp_path / "single"))
    two = one.model_copy(
        update={
            "train": one.train.model_copy(
                update={
                    "batch_size": 4,
                    "launcher": "accelerate",
                    "num_processes": 2,
                    "accelerate_config": str(CONFIGS / "ddp.yaml"),
                }
            )
        }
    )
    assert isinstance(data, TokenizedData)
    run_id = mlflow_store.create_run(mlflow_store.create_experiment("gpu-ddp")).info.run_id
    ddp = launch.train(two, data, str(tmp_path / "ddp"), run_id)
    from safetensors.torch import load_file

    a = load_file(str(Path(single.adapter_dir) / "adapter_model.safetensors"))
    b = load_file(str(Path(ddp.adapter_dir) / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-3)
    assert json.loads((Path(tmp_path) / "ddp" / "launch" / "result.json").read_text())["device"] == "cuda"
