"""Multi-process training through `accelerate launch`, proven on CPU with 2 gloo processes.

The slow test runs the whole `finetune` flow twice on a tiny BERT classifier: in the flow's process
with batch 8, and as 2 DDP processes (infra/accelerate/cpu-gloo.yaml) with batch 4 each, the same
global batch over the same data order. Everything random is switched off (LoRA and BERT dropout 0),
so the two runs must train the same adapter up to float reduction order, and track the same
metrics, each once per step (rank 1 logs nothing). The fast tests check the configs in
infra/accelerate with accelerate's own classes and that a bad config fails in the preflight.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import safetensors.torch

from flows.distributed import launch
from flows.finetune import finetune, preflight
from flows.params import FinetuneParams
from flows.steps import TokenizedData
from flows.steps.train import _LogForwarder
from tests.flows import fixtures

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "infra" / "accelerate"
MAX_STEPS = 6
# Measured: the largest adapter difference between the two runs is ~4e-7 (float reduction order;
# LoRA B entries reach ~0.015). The gradients doubled by the Trainer's loss-scale guess for 2 processes
# (which the train step turns off) move the adapter by ~2e-4 and double the logged loss. 1e-5 sits
# well between the two.
ADAPTER_ATOL = 1e-5
LOSS_ATOL = 1e-6  # losses (~0.69) agree to ~1e-7


def _params(root: Path, **train: Any) -> FinetuneParams:
    return FinetuneParams.model_validate(
        {
            "model": {"name_or_path": str(root / "model"), "task": "seq_cls", "dtype": "float32"},
            "data": {
                "train_file": str(root / "train.jsonl"),
                "validation_file": str(root / "validation.jsonl"),
                "test_file": str(root / "test.jsonl"),
            },
            "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
            "train": {
                "max_steps": MAX_STEPS,
                "learning_rate": 5e-3,
                "eval_batch_size": 4,
                "logging_steps": 1,
                "eval_every": "epoch",
                "save_steps": 4,  # a checkpoint mid-run, written and removed by rank 0 only
                **train,
            },
            "eval": {"metrics": ["accuracy", "f1"]},
            "tracking": {"experiment": "distributed"},
            "output_dir": str(root / "out"),
        }
    )


def _deterministic_model(root: Path) -> None:
    """The fixture BERT with dropout off: each rank would otherwise draw its own dropout masks."""
    tokenizer = fixtures.tokenizer_for("seq_cls")
    model = fixtures.tiny_model("seq_cls", tokenizer)
    model.config.hidden_dropout_prob = 0.0
    model.config.attention_probs_dropout_prob = 0.0
    tokenizer.save_pretrained(root / "model")
    model.save_pretrained(root / "model")


def _history(client: Any, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, name)]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_two_gloo_processes_train_and_track_like_one(mlflow_store: Any, tmp_path: Path) -> None:
    client = mlflow_store
    _deterministic_model(tmp_path)
    fixtures.write_jsonl(tmp_path / "train.jsonl", fixtures.rows("seq_cls", 24))
    fixtures.write_jsonl(tmp_path / "validation.jsonl", fixtures.rows("seq_cls", 6))
    fixtures.write_jsonl(tmp_path / "test.jsonl", fixtures.rows("seq_cls", 8))
    single = finetune(_params(tmp_path, batch_size=8))
    ddp = finetune(
        _params(
            tmp_path,
            batch_size=4,
            launcher="accelerate",
            num_processes=2,
            accelerate_config=str(CONFIGS / "cpu-gloo.yaml"),
        )
    )

    # The same adapter, up to reduction order.
    weights = [
        safetensors.torch.load_file(os.path.join(s["adapter_dir"], "adapter_model.safetensors"))
        for s in (single, ddp)
    ]
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        assert (value - weights[1][key]).abs().max().item() <= ADAPTER_ATOL, key
    assert any(v.abs().max().item() > 100 * ADAPTER_ATOL for k, v in weights[1].items() if "lora_B" in k)

    # Rank 0 alone wrote: one adapter, the launch files and one result, no checkpoints left.
    run_dir = Path(ddp["adapter_dir"]).parent
    assert sorted(os.listdir(run_dir)) == ["adapter", "launch"]
    assert sorted(os.listdir(run_dir / "launch")) == ["job.json", "result.json"]
    assert sorted(os.listdir(run_dir / "adapter")) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]

    # Tracked alike: the same metric names; train_loss once per step (no copy from rank 1), equal values.
    runs = [client.get_run(s["run_id"]) for s in (single, ddp)]
    names = [{k for k in r.data.metrics if not k.startswith("system/")} for r in runs]
    assert names[0] == names[1]
    assert runs[1].data.tags["device"] == "cpu"
    for name in ("train_loss", "val_loss", "grad_norm", "learning_rate"):
        ours, theirs = _history(client, ddp["run_id"], name), _history(client, single["run_id"], name)
        assert [step for step, _ in ours] == [step for step, _ in theirs], name
        assert [v for _, v in ours] == pytest.approx([v for _, v in theirs], abs=LOSS_ATOL), name
    assert [step for step, _ in _history(client, ddp["run_id"], "train_loss")] == list(
        range(1, MAX_STEPS + 1)
    )
    assert ddp["metrics"] == pytest.approx(single["metrics"], abs=LOSS_ATOL)
    assert runs[1].data.metrics["train_runtime_s"] > 0 and runs[1].data.metrics["peak_memory_mb"] > 0


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_the_token_mean_loss_is_global_across_processes(mlflow_store: Any, tmp_path: Path) -> None:
    """A causal LM whose completions differ in length: 2 processes × batch 2 × accumulation 2 must make
    the update of 1 process × batch 8, which needs one target-token count over both ranks."""
    model = fixtures.model_dir(tmp_path / "models", "chat")  # Qwen2, no dropout
    rows = [{"prompt": f"item {i}:", "completion": "ab " * (1 + i % 7)} for i in range(24)]
    fixtures.write_jsonl(tmp_path / "train.jsonl", rows)
    fixtures.write_jsonl(tmp_path / "test.jsonl", rows[:4])

    def params(**train: Any) -> FinetuneParams:
        return FinetuneParams.model_validate(
            {
                "model": {"name_or_path": model, "task": "causal_lm", "dtype": "float32"},
                "data": {
                    "train_file": str(tmp_path / "train.jsonl"),
                    "test_file": str(tmp_path / "test.jsonl"),
                    "format": "completion",
                },
                "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
                "train": {"max_steps": 3, "learning_rate": 5e-3, "logging_steps": 1, **train},
                "eval": {"metrics": ["exact_match"], "max_new_tokens": 2},
                "tracking": {"experiment": "distributed-lm"},
                "output_dir": str(tmp_path / "out"),
            }
        )

    single = finetune(params(batch_size=8))
    ddp = finetune(
        params(
            batch_size=2,
            gradient_accumulation_steps=2,
            launcher="accelerate",
            num_processes=2,
            accelerate_config=str(CONFIGS / "cpu-gloo.yaml"),
        )
    )
    weights = [
        safetensors.torch.load_file(os.path.join(s["adapter_dir"], "adapter_model.safetensors"))
        for s in (single, ddp)
    ]
    for key, value in weights[0].items():
        assert (value - weights[1][key]).abs().max().item() <= ADAPTER_ATOL, key
    losses = [[v for _, v in _history(mlflow_store, s["run_id"], "train_loss")] for s in (single, ddp)]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], abs=LOSS_ATOL)


def test_failing_launch_raises_with_the_end_of_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for a failing `accelerate launch` (the real one needs ~30 s to import torch twice).
    script = "import sys\nfor i in range(100): print(f'line {i}', file=sys.stderr)\nsys.exit(3)"
    monkeypatch.setattr(launch, "launch_command", lambda *a, **k: [sys.executable, "-c", script])
    params = _params(tmp_path, launcher="accelerate", batch_size=4)
    data = TokenizedData(
        path="-", fingerprint="f", cache_key="k", task="seq_cls", label_names=fixtures.LABELS,
        num_train=1, num_test=1, num_train_tokens=1, source="-", cached=False,
    )  # fmt: skip
    stale = tmp_path / "run" / "launch" / "result.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")  # an earlier launch's result must not pass for this one's
    with pytest.raises(RuntimeError, match=r"training process failed \(exit code 3\)") as failure:
        launch.train(params, data, str(tmp_path / "run"), run_id="unused")
    message = str(failure.value)
    assert "line 99\n" in message and f"line {99 - launch.TAIL_LINES}\n" not in message
    assert not stale.exists()


@pytest.mark.parametrize("name", ["cpu-gloo", "ddp", "ddp-multinode", "fsdp", "deepspeed-zero2"])
def test_configs_load_with_accelerates_own_classes(name: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))  # unknown top-level keys raise
    assert isinstance(config, ClusterConfig)
    # accelerate copies nested keys onto its launch options without checking them: check here.
    options = set(vars(launch_command_parser().parse_args(["train.py"])))
    nested = [k if k.startswith("fsdp_") else f"fsdp_{k}" for k in config.fsdp_config]
    assert set(nested) | set(config.deepspeed_config) <= options
    expected = {
        "cpu-gloo": ("MULTI_GPU", 1, True),
        "ddp": ("MULTI_GPU", 1, False),
        "ddp-multinode": ("MULTI_GPU", 2, False),
        "fsdp": ("FSDP", 1, False),
        "deepspeed-zero2": ("DEEPSPEED", 1, False),
    }[name]
    assert (config.distributed_type.value, config.num_machines, config.use_cpu) == expected


def test_bad_accelerate_config_fails_in_the_preflight(tmp_path: Path) -> None:
    for split in ("train", "validation", "test"):
        fixtures.write_jsonl(tmp_path / f"{split}.jsonl", fixtures.rows("seq_cls", 4))

    def params(config: str, n: int = 2) -> FinetuneParams:
        return _params(tmp_path, launcher="accelerate", num_processes=n, accelerate_config=config)

    preflight(params(str(CONFIGS / "cpu-gloo.yaml")))
    preflight(params(str(CONFIGS / "ddp-multinode.yaml"), 16))
    with pytest.raises(ValueError, match=r"train.accelerate_config='nope.yaml' does not exist"):
        preflight(params("nope.yaml"))
    typo = tmp_path / "typo.yaml"
    typo.write_text((CONFIGS / "ddp.yaml").read_text().replace("num_machines", "num_machine"))
    with pytest.raises(
        ValueError, match=r"not a valid accelerate config.*unknown keys \(\['num_machine'\]\)"
    ):
        preflight(params(str(typo)))
    with pytest.raises(ValueError, match=r"set train.num_processes >= 2 \(got 1\)"):
        preflight(params(str(CONFIGS / "ddp.yaml"), 1))
    preflight(params(str(CONFIGS / "fsdp.yaml"), 8))  # FSDP2 with a full state dict: the sharded path
    fsdp1 = tmp_path / "fsdp1.yaml"
    fsdp1.write_text((CONFIGS / "fsdp.yaml").read_text().replace("fsdp_version: 2", "fsdp_version: 1"))
    with pytest.raises(ValueError, match=r"FSDP1 flattens frozen base weights.*fsdp_version: 2"):
        preflight(params(str(fsdp1)))
    sharded = tmp_path / "sharded.yaml"
    sharded.write_text((CONFIGS / "fsdp.yaml").read_text().replace("FULL_STATE_DICT", "SHARDED_STATE_DICT"))
    with pytest.raises(ValueError, match=r"fsdp_state_dict_type: FULL_STATE_DICT"):
        preflight(params(str(sharded)))
    # On CPU accelerate would quietly train data parallel under an FSDP config (seen: MULTI_CPU).
    on_cpu = tmp_path / "fsdp-cpu.yaml"
    on_cpu.write_text((CONFIGS / "fsdp.yaml").read_text().replace("use_cpu: false", "use_cpu: true"))
    with pytest.raises(ValueError, match=r"FSDP on GPUs only.*cpu-gloo.yaml"):
        preflight(params(str(on_cpu)))
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ValueError, match=r"needs DeepSpeed: pip install deepspeed"):
            preflight(params(str(CONFIGS / "deepspeed-zero2.yaml")))


def test_launch_command_has_its_own_rendezvous_port(tmp_path: Path) -> None:
    params = _params(tmp_path, launcher="accelerate", num_processes=2)
    cmd = launch.launch_command(params, "LAUNCH_DIR", port=launch.free_port())
    assert cmd[-3:] == ["-m", "flows.distributed.worker", "LAUNCH_DIR"]
    assert "--multi_gpu" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"
    port = int(cmd[cmd.index("--main_process_port") + 1])
    assert 0 < port < 65536


def test_only_the_world_process_zero_forwards_logs() -> None:
    seen: list[int] = []
    forwarder = _LogForwarder(lambda step, logs: seen.append(step))
    for step, zero in ((1, True), (2, False)):
        state = SimpleNamespace(global_step=step, is_world_process_zero=zero)
        forwarder.on_log(None, state, None, logs={"loss": 0.5})
    assert seen == [1]
