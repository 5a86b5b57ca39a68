"""The adapter as an MLflow model: every run logs a pyfunc that predicts from raw rows exactly as the
run's own evaluation did; the registry's champion loads by alias and serves over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flows.finetune import finetune
from flows.params import FinetuneParams, PromotionParams
from tests.flows import fixtures

pytestmark = pytest.mark.usefixtures("prefect_harness")
REPO_ROOT = Path(__file__).resolve().parents[2]

CONVERSATIONS = [
    [
        {"role": "system", "content": "answer briefly"},
        {"role": "user", "content": f"what is {i} plus {i}?"},
        {"role": "assistant", "content": str(2 * i)},
        {"role": "user", "content": "and twice that?"},
        {"role": "assistant", "content": str(4 * i)},
    ]
    for i in range(12)
]
ALPACA = "Q: {{ question }}\n{% if context %}Context: {{ context }}\n{% endif %}A:"


def _case(task: str, root: Path) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """(config, test rows, model fixture) for one kind of run."""
    if task == "chat":
        rows = [{"messages": c} for c in CONVERSATIONS]
        data = {"format": "chat"}
        return data, rows, "chat"
    if task == "instruction":
        rows = [
            {"question": f"colour {i}?", "context": "" if i % 2 else "sky", "answer": f"blue {i}"}
            for i in range(12)
        ]
        data = {"format": "instruction", "prompt_template": ALPACA, "target_column": "answer"}
        return data, rows, "causal_lm"
    return {}, fixtures.rows(task, 12), task


def _run(task: str, root: Path) -> tuple[FinetuneParams, dict[str, Any], list[dict[str, Any]]]:
    data, rows, model = _case(task, root)
    generative = task in ("chat", "instruction")
    config = {
        "model": {
            "name_or_path": fixtures.model_dir(root / "models", model),
            "task": "causal_lm" if generative else task,
        },
        "data": {
            "train_file": fixtures.write_jsonl(root / "train.jsonl", rows),
            "test_file": fixtures.write_jsonl(root / "test.jsonl", rows[:5]),
            "validation_fraction": 0.25,
            **data,
        },
        "peft": {"r": 4, "lora_alpha": 8},
        "train": {"max_steps": 3, "batch_size": 4, "eval_batch_size": 2, "learning_rate": 1e-2},
        "eval": {
            "metrics": ["exact_match"]
            if generative
            else ["seqeval"]
            if task == "token_cls"
            else ["accuracy"],
            "max_new_tokens": 3,
        },
        "tracking": {"experiment": f"model-{task}"},
        "output_dir": str(root / "out"),
    }
    params = FinetuneParams.model_validate(config)
    return params, finetune(params), rows[:5]


def _recorded(client: Any, run_id: str, dest: Path) -> list[str]:
    path = client.download_artifacts(run_id, "eval_predictions.json", str(dest))
    table = json.loads(Path(path).read_text())
    return [row[table["columns"].index("prediction")] for row in table["data"]]


def _inputs(task: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Test rows as a user sends them: no label, no answer (chat: the turns before the last answer)."""
    if task == "chat":
        return pd.DataFrame([{"messages": r["messages"][:-1]} for r in rows])
    if task == "instruction":
        return pd.DataFrame([{"question": r["question"], "context": r["context"]} for r in rows])
    if task == "token_cls":
        return pd.DataFrame({"tokens": [r["tokens"] for r in rows]})
    return pd.DataFrame({"text": [r["text"] for r in rows]})


@pytest.mark.parametrize("task", ["seq_cls", "token_cls", "instruction", "chat"])
def test_the_logged_model_predicts_what_the_run_evaluated(
    task: str, mlflow_store: Any, tmp_path: Path
) -> None:
    import mlflow

    _, summary, rows = _run(task, tmp_path)
    client = mlflow_store
    run = client.get_run(summary["run_id"])
    model_id = summary["model_id"]
    assert run.data.tags["model.id"] == model_id and summary["model_uri"] == f"models:/{model_id}"
    logged = client.get_logged_model(model_id)
    assert logged.source_run_id == run.info.run_id and logged.name == "adapter"
    # The model is linked to the run's final metrics (the test and validation scores).
    linked = {m.key for m in logged.metrics or []}
    assert {f"eval_{k}" for k in summary["metrics"]} <= linked

    model = mlflow.pyfunc.load_model(summary["model_uri"])
    predictions = model.predict(_inputs(task, rows))
    recorded = _recorded(client, run.info.run_id, tmp_path / "dl")
    shown = [" ".join(p) if isinstance(p, list) else str(p) for p in predictions]
    assert shown == recorded  # the same predictions as the run's own evaluation, row by row
    # What travels with the model: signature, an input example, the recipe, tokenizer, adapter.
    info = model.metadata
    assert info.signature is not None and [c.name for c in info.signature.inputs.inputs]
    files = {a.path for a in client.list_logged_model_artifacts(model_id)}
    assert {"artifacts", "MLmodel", "code", "input_example.json"} <= files


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _invocations(port: int, frame: pd.DataFrame, timeout_s: float = 120.0) -> list[Any]:
    body = json.dumps({"dataframe_records": frame.to_dict(orient="records")}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return list(json.loads(response.read())["predictions"])


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow models serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError("mlflow models serve did not answer /ping in time")


@pytest.mark.slow
@pytest.mark.server
def test_the_quickstart_champion_loads_by_alias_and_serves_its_accuracy(
    mlflow_store: Any, tmp_path: Path
) -> None:
    import mlflow

    from flows.retrain import retrain

    params = FinetuneParams.from_yaml(
        REPO_ROOT / "configs" / "quickstart.yaml",
        [
            f"data.train_file={REPO_ROOT / 'flows/data/sentiment/train.jsonl'}",
            f"data.test_file={REPO_ROOT / 'flows/data/sentiment/test.jsonl'}",
            "train.max_steps=12",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    result = retrain(params, PromotionParams(registered_model="quickstart-served"))
    version = mlflow_store.get_model_version("quickstart-served", "1")
    assert version.source == f"models:/{result['model_id']}"

    test = pd.read_json(REPO_ROOT / "flows/data/sentiment/test.jsonl", lines=True)
    model = mlflow.pyfunc.load_model("models:/quickstart-served@champion")
    predictions = list(model.predict(test[["text"]]))
    accuracy = sum(p == y for p, y in zip(predictions, test["label"])) / len(test)
    assert accuracy == pytest.approx(result["metrics"]["accuracy"], abs=1e-12)

    # `mlflow models serve` in the project's environment answers with the same predictions.
    port = _free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/quickstart-served@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_ready(port, proc)
        served = _invocations(port, test[["text"]].head(40))
        assert served == predictions[:40]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
