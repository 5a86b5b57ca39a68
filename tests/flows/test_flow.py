"""The `finetune` flow end to end: Prefect test server, MLflow on SQLite, tiny local models and data.

Every task (seq_cls, token_cls, causal_lm, seq2seq_lm) runs the whole flow for a few steps; the test
then reads the run back from the MLflow store (params, exact metric names and histories, tags, the
dataset input, artifacts) and from the Prefect server (flow run, table artifact), and reloads the
adapter artifact to check it predicts exactly what the run recorded. Bad inputs must fail before
any model loads: no MLflow run, no adapter, no cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import safetensors.torch
import torch
import yaml

import flows.steps.data as data_step
import flows.steps.data.encode as encode_step
import flows.steps.model as model_step
import flows.steps.train as train_step
import peftcore
from flows.finetune import finetune
from flows.params import TASK_TYPES, FinetuneParams
from flows.steps.evaluate import evaluate_untrained, score
from tests.flows import fixtures
from tests.flows.conftest import use_mlflow_store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = 6
N_TRAIN, N_VAL, N_TEST = 24, 6, 8
METRICS = {
    "seq_cls": ["accuracy", "f1"],
    "token_cls": ["seqeval"],
    "causal_lm": ["exact_match"],
    "seq2seq_lm": ["exact_match", "rouge"],
}
SEQEVAL = {f"eval_{kind}_{m}" for kind in ("LOC", "PER") for m in ("precision", "recall", "f1", "number")}
EVAL_METRICS = {
    "seq_cls": {"eval_accuracy", "eval_f1"},
    "token_cls": SEQEVAL | {f"eval_overall_{m}" for m in ("precision", "recall", "f1", "accuracy")},
    "causal_lm": {"eval_exact_match"},
    "seq2seq_lm": {"eval_exact_match", "eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_rougeLsum"},
}
# The same metrics on the validation split, scored at the end of training (selection reads these).
VAL_METRICS = {
    task: {"val_" + name.removeprefix("eval_") for name in names} for task, names in EVAL_METRICS.items()
}
# Every run logs these, whatever the task (val_loss comes from the evaluations during training).
FIXED_METRICS = fixtures.RUN_METRICS | {"val_loss", "learning_rate", "grad_norm"}
AUTO_CLASS = {
    "seq_cls": peftcore.AutoPeftModelForSequenceClassification,
    "token_cls": peftcore.AutoPeftModelForTokenClassification,
    "causal_lm": peftcore.AutoPeftModelForCausalLM,
    "seq2seq_lm": peftcore.AutoPeftModelForSeq2SeqLM,
}
PEFT_CLASS = {
    "seq_cls": peftcore.PeftModelForSequenceClassification,
    "token_cls": peftcore.PeftModelForTokenClassification,
    "causal_lm": peftcore.PeftModelForCausalLM,
    "seq2seq_lm": peftcore.PeftModelForSeq2SeqLM,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One tiny model directory per task, shared by the module (runs only read them)."""
    root = tmp_path_factory.mktemp("models")
    return {task: fixtures.model_dir(root, task) for task in fixtures.TASKS}


def _config(root: Path, model_path: str, task: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A run config on fresh jsonl files in `root`; `sections` update its sections."""
    train = fixtures.write_jsonl(root / "train.jsonl", fixtures.rows(task, N_TRAIN))
    validation = fixtures.write_jsonl(root / "validation.jsonl", fixtures.rows(task, N_VAL))
    test = fixtures.write_jsonl(root / "test.jsonl", fixtures.rows(task, N_TEST))
    config: dict[str, Any] = {
        "model": {"name_or_path": model_path, "task": task, "dtype": "float32"},
        "data": {"train_file": train, "validation_file": validation, "test_file": test},
        "peft": {"r": 4, "lora_alpha": 8},
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": 4,
            "eval_batch_size": 3,  # uneven batches: the final evaluation pads
            "learning_rate": 5e-3,
            "logging_steps": 1,
            "eval_every": "epoch",
            "save_steps": 4,  # a checkpoint mid-run, removed once the adapter is saved
        },
        "eval": {"metrics": METRICS[task], "max_new_tokens": 4, "num_logged_predictions": N_TEST},
        "tracking": {"experiment": f"flow-{task}"},
        "output_dir": str(root / "out"),
    }
    if task in ("causal_lm", "seq2seq_lm"):
        config["data"].update(target_column="target", prompt_template="Review: {text}\nSentiment:")
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


def _prefect_client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _git_head() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _download(client: Any, run_id: str, path: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dest)))


def _recorded_predictions(client: Any, run_id: str, dest: Path) -> list[dict[str, str]]:
    table = json.loads(_download(client, run_id, "eval_predictions.json", dest).read_text())
    assert table["columns"] == ["input", "reference", "prediction", "correct"]
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def _as_param(value: Any) -> str:
    """How a config value reads as an MLflow param: JSON for lists and dicts, else str()."""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)


def _as_recorded(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Prediction rows as the MLflow table stores them (every cell a string)."""
    return [{k: str(v) for k, v in row.items()} for row in rows]


def _assert_no_trace(client: Any, output_dir: Path) -> None:
    """Nothing half-written: no MLflow run in any experiment, no run directory, no cache entry."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not client.search_runs(experiments), "an MLflow run was created for a run that never started"
    assert not (output_dir / "runs").exists(), "a run directory (adapter/checkpoints) was created"
    cache = output_dir / "cache" / "tokenized"
    assert not cache.exists() or not any(cache.iterdir()), f"partial cache left: {list(cache.iterdir())}"


@pytest.mark.parametrize("task", fixtures.TASKS)
def test_flow_run_is_tracked_and_its_adapter_reproduces_predictions(
    task: str, models: dict[str, str], mlflow_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mlflow_store
    params = FinetuneParams.model_validate(_config(tmp_path, models[task], task))
    status_while_training: list[str] = []
    real_train = train_step.train

    def observed_train(*args: Any, **kwargs: Any) -> Any:
        experiment = client.get_experiment_by_name(f"flow-{task}")
        status_while_training.extend(r.info.status for r in client.search_runs([experiment.experiment_id]))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(train_step, "train", observed_train)
    summary = finetune(params)

    run = client.get_run(summary["run_id"])
    assert status_while_training == ["RUNNING"]  # the run is open while it trains, closed after
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert client.get_experiment(run.info.experiment_id).name == f"flow-{task}"
    assert summary["data_cached"] is False

    # Params: every dotted key of FinetuneParams, plus the resolved adapter config.
    logged = run.data.params
    assert set(params.flat()) <= set(logged)
    assert logged["peft.r"] == "4"
    assert logged["train.learning_rate"] == "0.005"
    assert logged["model.task"] == task
    assert logged["eval.metrics"] == json.dumps(METRICS[task])
    assert logged["peft_config.r"] == "4"
    assert float(logged["peft_config.lora_alpha"]) == 8
    assert logged["peft_config.task_type"] == TASK_TYPES[task]
    assert logged["peft_config.peft_type"] == "LORA"
    assert logged["model.hub_id"] == "None"

    # Metrics: exactly these names, final values consistent with the summary.
    metrics = run.data.metrics
    assert {f"eval_{k}" for k in summary["metrics"]} == EVAL_METRICS[task]
    assert {f"val_{k}" for k in summary["val_metrics"]} == VAL_METRICS[task]
    system = {k for k in metrics if k.startswith("system/")}  # MLflow's sampler, every second in tests
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
    assert set(metrics) - system == FIXED_METRICS | EVAL_METRICS[task] | VAL_METRICS[task]
    for name, value in summary["metrics"].items():
        assert metrics[f"eval_{name}"] == pytest.approx(value, abs=1e-12)
    for name, value in summary["val_metrics"].items():
        assert metrics[f"val_{name}"] == pytest.approx(value, abs=1e-12)
    assert metrics["data_truncated_rows"] == 0 and metrics["data_dropped_rows"] == 0
    assert 0 < metrics["trainable_params"] < metrics["all_params"]
    assert metrics["trainable_percent"] == pytest.approx(
        100 * metrics["trainable_params"] / metrics["all_params"], rel=1e-12
    )
    assert metrics["trainable_percent"] == pytest.approx(summary["trainable_percent"], rel=1e-12)
    assert (
        metrics["train_runtime_s"] > 0 and metrics["train_tokens_per_s"] > 0 and metrics["peak_memory_mb"] > 0
    )
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in losses] == list(range(1, MAX_STEPS + 1))  # logging_steps=1
    assert all(m.value > 0 for m in losses)
    # Evaluations during training read the validation split only: the test split is scored once.
    evals = client.get_metric_history(run.info.run_id, "val_loss")
    assert evals and all(1 <= m.step <= MAX_STEPS for m in evals)
    for name in EVAL_METRICS[task]:
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [MAX_STEPS]

    # Tags: the Prefect flow run, code and library versions, data and adapter fingerprints.
    tags = run.data.tags
    flow_run_id = tags["prefect.flow_run_id"]
    with _prefect_client() as prefect:
        flow_run = prefect.read_flow_run(UUID(flow_run_id))
        flow = prefect.read_flow(flow_run.flow_id)
        assert flow.name == "finetune" and flow_run.state is not None and flow_run.state.is_completed()
        api_url = prefect.api_url
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["eval-metrics"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]),
            )
        )
    # The harness serves a UI next to its API, so the run links to its flow run page.
    ui_root = str(api_url).rstrip("/").removesuffix("/api")
    assert tags["prefect.flow_run_url"].startswith(ui_root + "/")
    assert tags["prefect.flow_run_url"].endswith(f"/flow-run/{flow_run_id}")
    head = _git_head()
    if head is not None:
        assert tags["git.commit"] == head
    import transformers

    assert tags["version.torch"] == torch.__version__
    assert tags["version.transformers"] == transformers.__version__
    assert tags["version.peftcore"] == peftcore.__version__
    assert tags["task"] == task and tags["peft.method"] == "lora"
    assert tags["dataset.fingerprint"] == summary["dataset_fingerprint"]
    assert tags["adapter.sha256"] == summary["adapter_sha256"]

    # The Prefect table artifact holds the same test and validation metrics.
    assert len(artifacts) == 1 and artifacts[0].type == "table"
    table = artifacts[0].data if isinstance(artifacts[0].data, list) else json.loads(artifacts[0].data)
    assert {row["metric"]: row["value"] for row in table} == {
        **{f"eval_{k}": round(v, 6) for k, v in summary["metrics"].items()},
        **{f"val_{k}": round(v, 6) for k, v in summary["val_metrics"].items()},
    }

    # The dataset as an MLflow input, its digest the start of the raw-data fingerprint.
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == summary["dataset_fingerprint"][:36]
    assert json.loads(dataset_input.dataset.source)["uri"] == str(tmp_path / "train.jsonl")
    input_tags = {t.key: t.value for t in dataset_input.tags}
    assert input_tags["mlflow.data.context"] == "training"
    counts = (input_tags["num_train"], input_tags["num_validation"], input_tags["num_test"])
    assert counts == (str(N_TRAIN), str(N_VAL), str(N_TEST))

    # Artifacts: the adapter in HF PEFT layout, params.yaml, the loss curve, the predictions table.
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert top == {"adapter", "params.yaml", "loss_curve.png", "eval_predictions.json"}
    adapter = _download(client, run.info.run_id, "adapter", tmp_path / "dl")
    assert sorted(os.listdir(adapter)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == summary["adapter_sha256"]
    # The adapter file holds exactly the trainable parameters (LoRA A/B, plus the head for classifiers).
    assert sum(t.numel() for t in safetensors.torch.load(weights).values()) == metrics["trainable_params"]
    assert metrics["adapter_size_bytes"] == sum(f.stat().st_size for f in adapter.iterdir())
    # A local base and no model.hub_id: save_pretrained records the local path (as HF PEFT does), which
    # loads on this machine only; the model card leaves it out of its metadata.
    saved_config = json.loads((adapter / "adapter_config.json").read_text())
    assert saved_config["base_model_name_or_path"] == models[task]
    assert "base_model:" not in (adapter / "README.md").read_text()
    # The tracked peft_config.* params are the saved config (e.g. fan_in_fan_out turned on for GPT-2's
    # Conv1D), but for the two fields save_pretrained sets: the base path and inference_mode.
    assert saved_config["inference_mode"] is True and logged["peft_config.inference_mode"] == "False"
    assert logged["peft_config.base_model_name_or_path"] == "None"
    tracked = {k.removeprefix("peft_config."): v for k, v in logged.items() if k.startswith("peft_config.")}
    assert tracked.keys() == saved_config.keys()
    for key in saved_config.keys() - {"base_model_name_or_path", "inference_mode"}:
        assert tracked[key] == _as_param(saved_config[key]), key
    assert not (Path(summary["adapter_dir"]).parent / "checkpoints").exists()
    saved = yaml.safe_load(_download(client, run.info.run_id, "params.yaml", tmp_path / "dl").read_text())
    assert FinetuneParams.model_validate(saved) == params
    png = _download(client, run.info.run_id, "loss_curve.png", tmp_path / "dl").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    recorded = _recorded_predictions(client, run.info.run_id, tmp_path / "dl")
    assert len(recorded) == N_TEST

    # The artifact adapter loads by itself with the task's Auto class (base from the recorded path)
    # and predicts what the run recorded.
    model = AUTO_CLASS[task].from_pretrained(str(adapter))
    assert type(model) is PEFT_CLASS[task]
    data = data_step.tokenize(params, os.path.join(params.output_dir, "cache", "tokenized"))
    assert data.cached and data.fingerprint == summary["dataset_fingerprint"]
    rescored = score(params, data, model)
    assert _as_recorded(rescored.predictions) == recorded
    assert rescored.metrics == summary["metrics"]


def test_second_identical_run_reuses_the_tokenized_data(
    models: dict[str, str], mlflow_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = FinetuneParams.model_validate(_config(tmp_path, models["seq_cls"], "seq_cls"))
    encoders: list[str] = []
    real_encoder = encode_step.encoder

    def counting_encoder(*args: Any, **kwargs: Any) -> Any:
        encoders.append(args[3])  # the split
        return real_encoder(*args, **kwargs)

    monkeypatch.setattr(encode_step, "encoder", counting_encoder)
    first = finetune(params)
    assert first["data_cached"] is False and sorted(encoders) == ["test", "train", "validation"]
    # The second run also evaluates the untrained adapter first (baseline_<metric>).
    second = finetune(params, baseline=True)
    assert second["data_cached"] is True and len(encoders) == 3  # nothing tokenized again
    assert second["dataset_fingerprint"] == first["dataset_fingerprint"]
    assert len(os.listdir(tmp_path / "out" / "cache" / "tokenized")) == 1
    # CPU training is deterministic: the same inputs give the same adapter bytes.
    assert second["adapter_sha256"] == first["adapter_sha256"]
    metrics = mlflow_store.get_run(second["run_id"]).data.metrics
    assert set(second["baseline_metrics"]) == set(METRICS["seq_cls"])
    for name, value in second["baseline_metrics"].items():
        assert metrics[f"baseline_{name}"] == pytest.approx(value, abs=1e-12)
    assert "baseline_accuracy" not in mlflow_store.get_run(first["run_id"]).data.metrics
    # The predictions table has the untrained adapter's prediction next to the trained one's.
    table = json.loads(
        _download(mlflow_store, second["run_id"], "eval_predictions.json", tmp_path / "dl").read_text()
    )
    assert table["columns"] == ["input", "reference", "prediction", "correct", "baseline_prediction"]
    data = data_step.tokenize(params, os.path.join(params.output_dir, "cache", "tokenized"))
    expected = evaluate_untrained(params, data).predictions
    assert [row[4] for row in table["data"]] == [str(p["prediction"]) for p in expected]
    assert len(table["data"]) == N_TEST


def test_eval_every_steps_logs_each_evaluation(
    models: dict[str, str], mlflow_store: Any, tmp_path: Path
) -> None:
    config = _config(tmp_path, models["seq_cls"], "seq_cls", train={"eval_every": "steps", "eval_steps": 2})
    summary = finetune(FinetuneParams.model_validate(config))
    history = mlflow_store.get_metric_history(summary["run_id"], "val_accuracy")
    # Validation evaluations at steps 2, 4, 6 during training, then the final one at the last step;
    # the test split is scored once.
    assert [m.step for m in history] == [2, 4, 6, 6]
    assert history[-1].value == summary["val_metrics"]["accuracy"]
    assert [m.step for m in mlflow_store.get_metric_history(summary["run_id"], "val_loss")] == [2, 4, 6]
    assert [m.step for m in mlflow_store.get_metric_history(summary["run_id"], "eval_accuracy")] == [6]


def test_published_run_loads_by_hub_id_with_the_auto_class(
    models: dict[str, str], mlflow_store: Any, tmp_path: Path, local_hub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi

    token = "hf_local_write"
    monkeypatch.setenv("HF_TOKEN", token)
    api = HfApi(token=token)
    api.create_repo("user/tiny-bert", private=False)
    api.upload_folder(repo_id="user/tiny-bert", folder_path=models["seq_cls"])
    config = _config(
        tmp_path,
        models["seq_cls"],
        "seq_cls",
        model={"hub_id": "user/tiny-bert"},
        publish={"repo_id": "user/tiny-bert-lora"},
    )
    params = FinetuneParams.model_validate(config)
    summary = finetune(params)

    run = mlflow_store.get_run(summary["run_id"])
    assert run.data.params["peft_config.base_model_name_or_path"] == "user/tiny-bert"
    assert run.data.tags["hub.repo_id"] == "user/tiny-bert-lora"
    assert run.data.tags["hub.commit"] == summary["hub_commit"]
    assert api.list_repo_commits("user/tiny-bert-lora")[0].commit_id == summary["hub_commit"]
    assert api.model_info("user/tiny-bert-lora").private

    # The adapter names its base by Hub id, so the Auto class loads both by themselves.
    model = peftcore.AutoPeftModelForSequenceClassification.from_pretrained(
        "user/tiny-bert-lora", token=token
    )
    assert type(model) is peftcore.PeftModelForSequenceClassification
    data = data_step.tokenize(params, os.path.join(params.output_dir, "cache", "tokenized"))
    recorded = _recorded_predictions(mlflow_store, run.info.run_id, tmp_path / "dl")
    assert _as_recorded(score(params, data, model).predictions) == recorded


# -- bad input: a clear error before any model loads, and nothing half-written ------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bad_case(case: str, root: Path) -> tuple[dict[str, Any], str]:
    """(config sections to change, the error it must raise) for one kind of bad input."""
    if case == "missing column":
        return {
            "data": {"text_column": "review"}
        }, r"data\.text_column='review' is not a column of the train split"
    if case == "empty split":
        (root / "empty.jsonl").write_text("")
        return {"data": {"test_file": str(root / "empty.jsonl")}}, r"data\.test_file=.*no rows.*test split"
    if case == "unknown label":
        rows = [*fixtures.rows("seq_cls", 4), {"text": "meh", "label": "neutral"}]
        fixtures.write_jsonl(root / "odd.jsonl", rows)
        return (
            {"data": {"test_file": str(root / "odd.jsonl"), "label_names": fixtures.LABELS}},
            r"test split .*labels not in label_names: \['neutral'\]",
        )
    if case == "invalid json":
        (root / "broken.jsonl").write_text(
            '{"text": "fine", "label": "positive"}\n{"text": "cut off", "lab\n'
        )
        return {
            "data": {"train_file": str(root / "broken.jsonl")}
        }, r"data\.train_file=.*line 2 is not valid JSON"
    if case == "unknown metric":
        return {
            "eval": {"metrics": ["accuracy", "no_such_metric"]}
        }, r"unknown metric 'no_such_metric'.*HF_HUB_OFFLINE=1"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["missing column", "empty split", "unknown label", "invalid json", "unknown metric"]
)
def test_bad_input_fails_before_any_model_loads(
    case: str, models: dict[str, str], mlflow_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, models["seq_cls"], "seq_cls")
    changes, message = _bad_case(case, tmp_path)
    params = FinetuneParams.model_validate(
        {**config, **{name: {**config[name], **values} for name, values in changes.items()}}
    )

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded for a run whose input is invalid")

    monkeypatch.setattr(model_step, "wrap", must_not_run)
    monkeypatch.setattr(train_step, "train", must_not_run)
    with pytest.raises(ValueError, match=message):
        finetune(params)
    _assert_no_trace(mlflow_store, tmp_path / "out")


def test_unreachable_tracking_server_fails_fast(
    models: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_template: Path
) -> None:
    client = use_mlflow_store(monkeypatch, tmp_path, mlflow_template)  # where the run would have gone
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = FinetuneParams.model_validate(_config(tmp_path, models["seq_cls"], "seq_cls"))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"MLflow tracking server {uri} is unreachable"):
        finetune(params)
    # Refused at once, not after MLflow's HTTP retries (minutes).
    assert time.perf_counter() - start < 15
    _assert_no_trace(client, tmp_path / "out")


# -- chat --------------------------------------------------------------------------------------------
def _conversation(i: int, long: bool = False) -> dict[str, Any]:
    question = f"what is {i} plus {i}?" + (" please explain in detail" * 12 if long else "")
    return {
        "messages": [
            {"role": "system", "content": "answer with the number only"},
            {"role": "user", "content": question},
            {"role": "assistant", "content": str(2 * i)},
            {"role": "user", "content": "and twice that?"},
            {"role": "assistant", "content": str(4 * i)},
        ]
    }


def test_chat_run_is_tracked_end_to_end(mlflow_store: Any, tmp_path: Path) -> None:
    chat = fixtures.model_dir(tmp_path / "models", "chat")
    rows = [_conversation(i, long=i % 5 == 0) for i in range(30)]
    train = fixtures.write_jsonl(tmp_path / "chats.jsonl", rows)
    test = fixtures.write_jsonl(tmp_path / "test.jsonl", [_conversation(i) for i in range(40, 46)])
    params = FinetuneParams.model_validate(
        {
            "model": {"name_or_path": chat, "task": "causal_lm", "dtype": "float32"},
            "data": {
                "train_file": train,
                "test_file": test,
                "validation_fraction": 0.2,
                "format": "chat",
                "max_length": 256,  # the long conversations lose their start (truncation: left)
                "packing": True,
            },
            "peft": {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"},
            "train": {
                "max_steps": 4,
                "batch_size": 4,
                "logging_steps": 1,
                "eval_every": "steps",
                "eval_steps": 2,
            },
            "eval": {"metrics": ["exact_match", "perplexity"], "max_new_tokens": 4},
            "tracking": {"experiment": "chat"},
            "output_dir": str(tmp_path / "out"),
        }
    )
    summary = finetune(params, baseline=True)
    run = mlflow_store.get_run(summary["run_id"])
    metrics = run.data.metrics
    assert {"val_loss", "eval_exact_match", "eval_perplexity", "val_exact_match", "val_perplexity"} <= set(
        metrics
    )
    assert [m.step for m in mlflow_store.get_metric_history(run.info.run_id, "val_loss")] == [2, 4]
    # 6 of the 30 training conversations (ids 0, 5, ..., 25) are too long; where they land (train or
    # validation) depends on the seeded carve, the total does not.
    assert metrics["data_truncated_rows"] == 6 and metrics["data_dropped_rows"] == 0
    assert json.loads(run.data.tags["dataset.truncation"])["test"] == {"truncated": 0, "dropped": 0}
    # Every test conversation is scored on its last answer, generated from the turns before it.
    recorded = json.loads(
        _download(mlflow_store, run.info.run_id, "eval_predictions.json", tmp_path / "dl").read_text()
    )
    assert recorded["columns"] == ["input", "reference", "prediction", "correct", "baseline_prediction"]
    table = [dict(zip(recorded["columns"], row, strict=True)) for row in recorded["data"]]
    assert [row["reference"] for row in table] == [str(4 * i) for i in range(40, 46)]
    assert all(row["input"].endswith("and twice that?<|im_end|>\n<|im_start|>assistant\n") for row in table)
    assert metrics["eval_perplexity"] > 1.0
