"""image_cls, semantic_seg and asr end to end: the `finetune` flow offline on tiny models and generated data.

Each run trains a couple of epochs on a few dozen generated rows (learnable: the class is the
colour, the mask is the red square, each word is a tone), then checks what the pipeline promises:
the adapter files (HF format, the task's head saved, no task_type, the base class recorded), the
metric tracked in MLflow on both splits and in range, and the logged predictions (the table, and for
images the figure). Bad input fails before any model loads, naming the row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open

from flows.finetune import finetune
from flows.params import FinetuneParams
from flows.steps import data as data_step
from tests.flows import media

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("media-models")
    return {
        "image_cls": media.vit_dir(root),
        "semantic_seg": media.segformer_dir(root),
        "asr": media.whisper_dir(root),
    }


def _params(tmp_path: Path, model_path: str, task: str, data: dict[str, Any], **extra: Any) -> FinetuneParams:
    config: dict[str, Any] = {
        "model": {"name_or_path": model_path, "task": task},
        "data": data,
        "peft": {"method": "lora", "r": 8, "lora_alpha": 16},
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "eval_batch_size": 16,
            "learning_rate": 5e-3,
            "logging_steps": 1,
        },
        "tracking": {"experiment": f"media-{task}", "system_metrics": False},
        "output_dir": str(tmp_path / "out"),
    }
    for section, values in extra.items():
        config.setdefault(section, {}).update(values)
    return FinetuneParams.model_validate(config)


def _table(client: Any, run_id: str, dest: Path) -> list[dict[str, Any]]:
    dest.mkdir(parents=True, exist_ok=True)
    table = json.loads(
        Path(client.download_artifacts(run_id, "eval_predictions.json", str(dest))).read_text()
    )
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def _served(summary: dict[str, Any], column: str, files: list[bytes]) -> list[Any]:
    """Predictions of the run's logged MLflow model (loaded as a pyfunc) for raw file bytes."""
    import mlflow
    import pandas as pd

    assert summary["model_uri"], "the run logged no MLflow model"
    return list(mlflow.pyfunc.load_model(summary["model_uri"]).predict(pd.DataFrame({column: files})))


def _adapter(summary: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    folder = Path(summary["adapter_dir"])
    config = json.loads((folder / "adapter_config.json").read_text())
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    return config, keys


def test_image_classification_from_an_image_folder(
    models: dict[str, str], mlflow_store: Any, tmp_path: Path
) -> None:
    folder = media.image_folder(tmp_path, per_class=8)
    params = _params(
        tmp_path,
        models["image_cls"],
        "image_cls",
        {"dataset": folder, "validation_fraction": 0.25},
        eval={"metrics": ["accuracy", "f1"]},
    )
    summary = finetune(params, baseline=True)
    run = mlflow_store.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in ("accuracy", "f1"):
        assert 0.0 <= metrics[f"eval_{name}"] <= 1.0 and 0.0 <= metrics[f"val_{name}"] <= 1.0
        assert 0.0 <= metrics[f"baseline_{name}"] <= 1.0  # the untrained adapter and head
    # val_accuracy after each of the 2 epochs (the Trainer's evaluations), then the final adapter's.
    assert len(mlflow_store.get_metric_history(run.info.run_id, "val_accuracy")) >= 2
    assert mlflow_store.get_metric_history(run.info.run_id, "train_loss")
    config, keys = _adapter(summary)
    assert config["task_type"] is None and config["modules_to_save"] == ["classifier"]
    assert config["auto_mapping"]["base_model_class"] == "ViTForImageClassification"
    assert "base_model.model.classifier.weight" in keys
    assert any(k.endswith("q_proj.lora_A.weight") for k in keys)
    # Label map from the folder names; one prediction row per test image, with its file.
    table = _table(mlflow_store, run.info.run_id, tmp_path / "dl")
    assert len(table) == 12 and {r["reference"] for r in table} == set(media.COLOURS)
    assert all(r["input"].endswith(".png") and r["prediction"] in media.COLOURS for r in table)
    assert all(r["baseline_prediction"] in media.COLOURS for r in table)
    figure = Path(
        mlflow_store.download_artifacts(run.info.run_id, "eval_predictions.png", str(tmp_path / "fig"))
    )
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The run's accuracy is the table's.
    assert metrics["eval_accuracy"] == pytest.approx(np.mean([r["correct"] == "True" for r in table]))
    # The logged MLflow model predicts the same classes from the image files' bytes.
    served = _served(summary, "image", [Path(r["input"]).read_bytes() for r in table])
    assert list(served) == [r["prediction"] for r in table]


def test_speech_recognition_from_a_jsonl_of_wav_paths(
    models: dict[str, str], mlflow_store: Any, tmp_path: Path
) -> None:
    train = media.speech_jsonl(tmp_path, rows=24)
    params = _params(
        tmp_path,
        models["asr"],
        "asr",
        {"train_file": train, "test_fraction": 0.25, "validation_fraction": 0.2, "language": "english"},
        eval={"metrics": ["wer", "cer"], "max_new_tokens": 12},
    )
    summary = finetune(params)
    run = mlflow_store.get_run(summary["run_id"])
    metrics = run.data.metrics
    assert run.info.status == "FINISHED"
    for name in ("wer", "cer"):
        assert metrics[f"eval_{name}"] >= 0.0 and f"val_{name}" in metrics
    assert mlflow_store.get_metric_history(run.info.run_id, "val_loss")
    config, keys = _adapter(summary)
    assert config["task_type"] is None
    assert config["auto_mapping"]["base_model_class"] == "WhisperForConditionalGeneration"
    assert any("encoder.layers.0.self_attn.q_proj.lora_A" in k for k in keys)
    table = _table(mlflow_store, run.info.run_id, tmp_path / "dl")
    assert len(table) == 6
    words = set(media.TONES)
    assert all(set(r["reference"].split()) <= words and r["input"].endswith(".wav") for r in table)
    # The logged MLflow model transcribes the wav files (8 kHz, resampled) as the evaluation did.
    served = _served(summary, "audio", [(tmp_path / r["input"]).read_bytes() for r in table])
    assert served == [r["prediction"] for r in table]
    # The collator resamples the 8 kHz clips to the extractor's 16 kHz: 1 s windows of 100 frames.
    from datasets import load_from_disk

    from flows.steps.data.media import load_audio
    from flows.steps.data.media_encode import MediaCollator
    from flows.steps.model import load_processor

    data = data_step.tokenize(params, str(Path(params.output_dir) / "cache" / "tokenized"))
    row = load_from_disk(data.path)["train"][0]
    clip = {"bytes": row["audio_bytes"]}
    assert data.cached and len(load_audio(clip, None, 16000, True)) == 2 * len(
        load_audio(clip, None, media.AUDIO_RATE, False)
    )
    processor = load_processor(params)
    start = processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    batch = MediaCollator("asr", processor, start_token=start)([row])
    assert tuple(batch["input_features"].shape) == (1, 8, 100)
    # data.language: the labels name it after the start token (which the model adds itself).
    labels = processor.tokenizer.convert_ids_to_tokens(batch["labels"][0].tolist())
    assert labels[:3] == ["<|en|>", "<|transcribe|>", "<|notimestamps|>"] and labels[-1] == "<|endoftext|>"


def test_semantic_segmentation_from_a_parquet_of_image_and_mask_paths(
    models: dict[str, str], mlflow_store: Any, tmp_path: Path
) -> None:
    train = media.seg_files(tmp_path, rows=24, suffix=".parquet")
    params = _params(
        tmp_path,
        models["semantic_seg"],
        "semantic_seg",
        {"train_file": train, "test_fraction": 0.25, "label_names": media.SEG_LABELS, "augment": True},
        eval={"metrics": ["mean_iou"]},
    )
    summary = finetune(params)
    run = mlflow_store.get_run(summary["run_id"])
    metrics = run.data.metrics
    assert run.info.status == "FINISHED"
    for name in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert 0.0 <= metrics[f"eval_{name}"] <= 1.0
    config, keys = _adapter(summary)
    assert config["modules_to_save"] == ["decode_head"] and config["bias"] == "none"
    assert "base_model.model.decode_head.classifier.weight" in keys
    assert "base_model.model.decode_head.batch_norm.running_mean" in keys
    table = _table(mlflow_store, run.info.run_id, tmp_path / "dl")
    assert len(table) == 6 and all(r["reference"] == "background square" for r in table)
    # The logged MLflow model returns each image's mask at the image's size (32 × 32 here).
    masks = _served(summary, "image", [(tmp_path / r["input"]).read_bytes() for r in table])
    for mask, row in zip(masks, table, strict=True):
        classes = np.unique(np.asarray(mask))
        assert np.asarray(mask).shape == (32, 32)
        assert " ".join(media.SEG_LABELS[c] for c in classes) == row["prediction"]
    figure = Path(
        mlflow_store.download_artifacts(run.info.run_id, "eval_predictions.png", str(tmp_path / "fig"))
    )
    assert figure.stat().st_size > 1000


@pytest.mark.parametrize("task", ["image_cls", "asr"])
def test_a_bfloat16_base_takes_its_inputs_in_bfloat16(
    models: dict[str, str], tmp_path: Path, task: str
) -> None:
    # What a bf16 base on a GPU meets (the processors make float32 pixels / log-mels), here on CPU:
    # the training and evaluation steps run on a bfloat16 base without a dtype error.
    from flows.steps import evaluate as evaluate_step
    from flows.steps import train as train_step

    if task == "image_cls":
        data: dict[str, Any] = {"dataset": media.image_folder(tmp_path, per_class=2), "test_fraction": 0.25}
        metrics = ["accuracy"]
    else:
        data = {"train_file": media.speech_jsonl(tmp_path, rows=6), "test_fraction": 0.34}
        metrics = ["wer"]
    params = _params(
        tmp_path, models[task], task, data, model={"dtype": "bfloat16"}, train={"max_steps": 1},
        eval={"metrics": metrics, "max_new_tokens": 4},
    )  # fmt: skip
    prepared = data_step.tokenize(params, str(tmp_path / "cache"))
    trained = train_step.train(params, prepared, str(tmp_path / "run"))
    assert trained.global_step == 1 and trained.train_loss == trained.train_loss  # not NaN
    scored = evaluate_step.evaluate(params, prepared, trained.adapter_dir)
    assert set(scored.metrics) == set(metrics) and len(scored.predictions) == prepared.num_test


# -- bad input: a clear error naming the row, before any model loads --------------------------------
def _refuses(params: FinetuneParams, match: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.steps import model as model_step

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model or processor loaded before the data was checked")

    monkeypatch.setattr(model_step, "load_base_model", no_model)
    monkeypatch.setattr(model_step, "load_processor", no_model)
    with pytest.raises(ValueError, match=match):
        data_step.tokenize(params, str(Path(params.output_dir) / "cache"))


def test_bad_media_rows_fail_naming_the_row(
    models: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An image that does not decode.
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    (folder / "a.png").write_bytes(media._png(media.colour_image("red", rng)))
    (folder / "b.png").write_bytes(b"not an image")
    rows = [{"image": "a.png", "label": "red"}, {"image": "b.png", "label": "red"}]
    bad = media.write_jsonl(folder / "bad.jsonl", rows)
    params = _params(tmp_path, models["image_cls"], "image_cls", {"train_file": bad, "test_file": bad})
    _refuses(
        params,
        r"row 1 of the train split: data.image_column='image' could not be decoded.*b\.png",
        monkeypatch,
    )
    # A label outside the label map.
    good = media.write_jsonl(folder / "labels.jsonl", [rows[0], {"image": "a.png", "label": "purple"}])
    params = _params(
        tmp_path,
        models["image_cls"],
        "image_cls",
        {"train_file": good, "test_file": good, "label_names": ["red", "green"]},
    )
    _refuses(params, r"row 1 of the train split: data.label_column='label' holds 'purple'", monkeypatch)
    # A mask whose size differs from its image, and a mask class outside the label map.
    image, mask = media.square_scene(rng)
    (folder / "s.png").write_bytes(media._png(image))
    (folder / "m.png").write_bytes(media._png(mask[:16]))
    (folder / "m3.png").write_bytes(media._png(mask * 3))
    for mask_file, match in (
        ("m.png", r"row 0 .*mask .* is 32x16 but its image is 32x32"),
        ("m3.png", r"class ids \[3\]"),
    ):
        seg = media.write_jsonl(folder / "seg.jsonl", [{"image": "s.png", "annotation": mask_file}])
        params = _params(
            tmp_path,
            models["semantic_seg"],
            "semantic_seg",
            {"train_file": seg, "test_file": seg, "label_names": media.SEG_LABELS},
            eval={"metrics": ["mean_iou"]},
        )
        _refuses(params, match, monkeypatch)
    # Audio at another rate with resampling turned off.
    (folder / "t.wav").write_bytes(media.wav_bytes(media.tones(["low"])))
    speech = media.write_jsonl(folder / "speech.jsonl", [{"audio": "t.wav", "text": "low"}])
    params = _params(
        tmp_path,
        models["asr"],
        "asr",
        {"train_file": speech, "test_file": speech, "resample": False},
        eval={"metrics": ["wer"]},
    )
    _refuses(params, r"row 0 of the train split: data.audio_column='audio'.*8000 Hz.*16000 Hz", monkeypatch)


# -- the Prefect form, the sweep and `peftflow compare` take the new tasks unchanged ------------------
@pytest.mark.slow  # two more trainings (~10 s), as the text sweep test (tests/flows/test_sweep.py)
def test_form_sweep_and_compare_work_for_media_tasks(
    models: dict[str, str], mlflow_store: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    from flows.cli import main
    from flows.params import SweepGrid
    from flows.sweep import sweep

    folder = media.image_folder(tmp_path, per_class=4)
    params = _params(
        tmp_path,
        models["image_cls"],
        "image_cls",
        {"dataset": folder, "validation_fraction": 0.25},
        train={"epochs": 1},
        eval={"metrics": ["accuracy"]},
        tracking={"experiment": "media-sweep", "log_model": False},  # the other tests load the models
    )
    # The form: the server's schema check of the JSON the UI sends, then the flow's own validation.
    schema = parameter_schema(finetune)
    form = {"params": json.loads(params.model_dump_json())}
    validate(form, schema.model_dump_for_openapi(), raise_on_error=True)
    assert finetune.validate_parameters(form)["params"] == params
    for task in ("semantic_seg", "asr"):
        other = json.loads(json.dumps(form))
        other["params"]["model"]["task"] = task
        validate(other, schema.model_dump_for_openapi(), raise_on_error=True)

    summary = sweep(params, SweepGrid(methods=["lora"], ranks=[2, 4], metric="val_accuracy"))
    runs = list(mlflow_store.search_runs([mlflow_store.get_experiment_by_name("media-sweep").experiment_id]))
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert all(0.0 <= r.data.metrics["val_accuracy"] <= 1.0 for r in children)
    assert summary["best"]["run_id"] in {r.info.run_id for r in children}
    # The comparison rows: one per rank, each with its validation accuracy and the test one.
    assert [(row["r"], row["status"]) for row in summary["trials"]] == [(2, "FINISHED"), (4, "FINISHED")]
    assert all("val_accuracy" in row and "eval_accuracy" in row for row in summary["trials"])

    capsys.readouterr()
    assert main(["compare", "--experiment", "media-sweep"]) == 0
    out = capsys.readouterr().out
    assert "val_accuracy" in out and "eval_accuracy" in out
    assert sum(line.startswith("r2-lora") or line.startswith("r4-lora") for line in out.splitlines()) == 2
