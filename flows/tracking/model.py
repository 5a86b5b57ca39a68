"""The trained adapter as an MLflow 3 model: a `pyfunc` that predicts from rows in the data's own columns.

`log_adapter_model` logs one per run, a `LoggedModel` linked to the run (its output) and to the
run's metrics at the final step, under the model name `adapter`:

    adapter/      the PEFT adapter (adapter_config.json, adapter_model.safetensors)
    tokenizer/    the tokenizer as training used it (pad token, chat template); image and speech
                  models: their processor (image processor / feature extractor + tokenizer)
    recipe.yaml   the run's FinetuneParams: format, templates, lengths, generation settings
    meta.json     label names, the base model reference (Hub id + revision), whether it is embedded
    base/         the base model itself, only with tracking.embed_base_model
    code/         peftcore and flows as they were at training time (put first on sys.path on load);
                  the model itself is flows/tracking/served.py, a model from code (nothing pickled)

The base model is referenced, not copied: loading fetches it by Hub id and revision (or finds it in
the local cache / at its local path). `mlflow.pyfunc.load_model("models:/NAME@champion").predict(df)`
and `mlflow models serve -m models:/NAME@champion --env-manager local` run `flows.steps.predict`,
the formatting code training used. Inputs and outputs per task are in that module's docstring.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import Model
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import Array, ColSpec, Object, Property, Schema, TensorSpec

from flows.params import FinetuneParams
from flows.steps import TokenizedData, TrainResult

MODEL_NAME = "adapter"
_ROOT = Path(__file__).resolve().parents[2]


class AdapterModel(PythonModel):
    """Loads base + adapter + tokenizer + recipe from the model's artifacts; predicts raw rows."""

    def load_context(self, context: Any) -> None:
        import yaml

        from flows.steps.predict import Predictor

        artifacts = context.artifacts
        params = FinetuneParams.model_validate(yaml.safe_load(Path(artifacts["recipe"]).read_text("utf-8")))
        meta = json.loads(Path(artifacts["meta"]).read_text("utf-8"))
        self.predictor = Predictor(
            params,
            artifacts["adapter"],
            artifacts["tokenizer"],
            meta["label_names"],
            base_dir=artifacts.get("base"),
        )

    # No type hints here: MLflow would read them as the input schema (the signature says it).
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        rows = model_input.to_dict(orient="records") if hasattr(model_input, "to_dict") else list(model_input)
        return self.predictor.predict(rows)


def signature(params: FinetuneParams) -> ModelSignature:
    """Inputs: the columns the data format reads; output: a class name, tags, or text."""
    from flows.steps.data.format import template_fields

    d, task = params.data, params.model.task
    fmt = d.resolved_format(task)
    text = "string"
    inputs: list[ColSpec | TensorSpec]
    if task in ("image_cls", "semantic_seg", "asr"):  # the file's bytes (a path works too)
        column = d.audio_column if task == "asr" else d.image_column
        produced: Any = ColSpec(Array(Array("long"))) if task == "semantic_seg" else ColSpec(text)
        return ModelSignature(inputs=Schema([ColSpec("binary", column)]), outputs=Schema([produced]))
    if task == "seq_cls":
        inputs = [ColSpec(text, d.text_column)]
    elif task == "token_cls":
        inputs = [ColSpec(Array(text), d.tokens_column)]
    elif fmt == "chat":
        message = Object([Property("role", text), Property("content", text)])
        inputs = [ColSpec(Array(message), d.messages_column)]
    elif fmt == "completion":
        inputs = [ColSpec(text, d.prompt_column)]
    elif fmt == "instruction" and d.prompt_template is not None:
        # Template fields may be empty (e.g. Alpaca's optional input): not required.
        inputs = [ColSpec(text, name, required=False) for name in template_fields(d.prompt_template)]
    else:
        inputs = [ColSpec(text, d.text_column)]
    output: list[ColSpec | TensorSpec] = [ColSpec(Array(text)) if task == "token_cls" else ColSpec(text)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(output))


def input_example(data: TokenizedData, params: FinetuneParams, n: int = 2) -> Any:
    """The first test rows as a user sends them (the columns of the signature)."""
    import pandas as pd
    from datasets import load_from_disk

    test = load_from_disk(data.path)["test"].select(range(min(n, data.num_test)))
    task = params.model.task
    if task == "asr":
        return pd.DataFrame({params.data.audio_column: test["audio_bytes"]})
    if task in ("image_cls", "semantic_seg"):
        return pd.DataFrame({params.data.image_column: test["image_bytes"]})
    if task == "seq_cls":
        return pd.DataFrame({params.data.text_column: test["text"]})
    if task == "token_cls":
        return pd.DataFrame({params.data.tokens_column: test["tokens"]})
    return pd.DataFrame([json.loads(row) for row in test["inputs"]])


def log_adapter_model(
    run_id: str, params: FinetuneParams, data: TokenizedData, trained: TrainResult, step: int
) -> str:
    """Log the run's adapter as an MLflow model linked to the run and its metrics at `step`; returns
    the model id (the registry's versions point at `models:/<id>`)."""
    from flows.steps.model import base_model_hub_id, resolve_model_path
    from flows.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    with tempfile.TemporaryDirectory(prefix="mlflow-model-") as tmp:
        _preprocessor(params).save_pretrained(os.path.join(tmp, "tokenizer"))
        Path(tmp, "recipe.yaml").write_text(params.to_yaml(), encoding="utf-8")
        embedded = params.tracking.embed_base_model
        meta = {
            "label_names": data.label_names,
            "task": params.model.task,
            "base_model": base_model_hub_id(params.model) or resolve_model_path(params.model),
            "base_model_revision": params.model.revision,
            "base_embedded": embedded,
        }
        Path(tmp, "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        artifacts = {
            "adapter": trained.adapter_dir,
            "tokenizer": os.path.join(tmp, "tokenizer"),
            "recipe": os.path.join(tmp, "recipe.yaml"),
            "meta": os.path.join(tmp, "meta.json"),
        }
        if embedded:
            artifacts["base"] = _base_copy(params, data.label_names, tmp)
        info = Model.log(
            artifact_path=None,  # MLflow 3 names models (`name`); the positional is deprecated
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            step=step,
            # A model from code (flows/tracking/served.py), not a pickled object.
            python_model=str(Path(__file__).with_name("served.py")),
            artifacts=artifacts,
            code_paths=[str(_ROOT / "peftcore"), str(_ROOT / "flows")],
            signature=signature(params),
            input_example=input_example(data, params),
            pip_requirements=_requirements(),
            model_type="peft-adapter",
            tags={
                "peft.method": params.peft.method,
                "task": params.model.task,
                "base_model": meta["base_model"],
            },
        )
    return str(info.model_id)


def _base_copy(params: FinetuneParams, label_names: list[str] | None, tmp: str) -> str:
    """The base model saved next to the adapter (tracking.embed_base_model), with its tokenizer."""
    from flows.steps.model import load_base_model

    path = os.path.join(tmp, "base")
    load_base_model(params, label_names).save_pretrained(path)
    _preprocessor(params).save_pretrained(path)
    return path


def _preprocessor(params: FinetuneParams) -> Any:
    """The tokenizer as training used it, or for image and speech models their processor."""
    from flows.params import MEDIA_TASKS
    from flows.steps.model import load_processor, load_tokenizer

    return load_processor(params) if params.model.task in MEDIA_TASKS else load_tokenizer(params)


def _requirements() -> list[str]:
    """The libraries the model runs on, pinned to the versions it was trained with. peftcore and
    flows travel in the model's code/ folder."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in (
        "torch",
        "transformers",
        "safetensors",
        "huggingface_hub",
        "pydantic",
        "pyyaml",
        "jinja2",
        "pandas",
    ):
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return out
