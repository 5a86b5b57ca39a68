"""MLflow tracking: this package is the only place in the project that imports mlflow.

One MLflow run per flow run, created once and then addressed by id (`RunTracker(run_id)`), so every
task — even in another process — logs to the same run. Metric names are fixed (see `METRICS`).
The tracking URI comes from `MLFLOW_TRACKING_URI` (default `sqlite:///mlflow.db`, MLflow's own).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from flows.params import FinetuneParams
from flows.steps import EvalResult, TokenizedData, TrainResult, WrapResult, file_sha256
from flows.tracking.buffer import OneAttempt, StepBuffer, TrackingUnavailable, health_check

logger = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
MODEL_ID_TAG = "model.id"  # the run's logged MLflow model (models:/<id>)
METRICS = (
    "trainable_params",
    "all_params",
    "trainable_percent",
    "adapter_size_bytes",
    "train_loss",
    "train_runtime_s",
    "train_tokens_per_s",
    "peak_memory_mb",
    "data_truncated_rows",
    "data_dropped_rows",
)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def check_reachable(uri: str | None = None, timeout_s: float = 5.0) -> None:
    """Fail fast (before any training) when an HTTP tracking server does not answer."""
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
    except (OSError, urllib.error.URLError) as exc:
        raise ValueError(
            f"MLflow tracking server {uri} is unreachable ({exc}); start it (make serve) or unset "
            "MLFLOW_TRACKING_URI to track to the local sqlite:///mlflow.db"
        ) from None


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri())


# The MLflow UI opens an experiment with this kind on its runs table (without it: the GenAI overview).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created (as a model-training experiment) when it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, tags=EXPERIMENT_KIND))
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # created meanwhile by a concurrent run
            raise
        return str(client.get_experiment_by_name(name).experiment_id)  # type: ignore[union-attr]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_url(run_id: str, experiment_id: str, uri: str | None = None) -> str | None:
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def _log_inputs_once_created(client: MlflowClient, run_id: str, entity: Any, attempts: int = 4) -> None:
    """`log_inputs`, again when the server lost a race to create the same dataset row.

    Runs that start together on the same data (a burst of retrains, a sweep's trials on a team server)
    log the same dataset (experiment, name, digest). MLflow's SQL store looks the row up and inserts it
    when missing, so two runs can both miss it and the second insert fails on the table's unique
    constraint (sqlite: "UNIQUE constraint failed: datasets.…", Postgres: "dataset_pk"): a BAD_REQUEST
    that would fail a healthy run. The row exists by then, so the next attempt
    finds it and links it. Any other error is raised at once.
    """
    import time

    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=[entity])
            return
        except mlflow.exceptions.MlflowException as exc:
            lost_race = "UNIQUE constraint failed: datasets." in str(exc) or '"dataset_pk"' in str(exc)
            if not lost_race or attempt == attempts - 1:
                raise
            logger.info("dataset row created by a concurrent run; linking it (attempt %d)", attempt + 2)
            time.sleep(0.2 * (attempt + 1))


class RunTracker:
    """Logs to one existing MLflow run, by id.

    Training log steps (`log_step`) are buffered through an outage of the tracking server and must be
    sent with `flush_steps` before the run is closed; everything else is sent at once, with the MLflow
    client's own retries.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.client = _client()
        self._monitor: Any = None
        self._healthy = health_check(tracking_uri())
        self._steps = StepBuffer(OneAttempt(self.client), run_id, self._healthy)

    @classmethod
    def start(cls, params: FinetuneParams, tags: dict[str, str | None]) -> RunTracker:
        """Create the run (and the experiment if needed) with params and environment tags."""
        import torch
        import transformers

        import peftcore

        client = _client()
        experiment_id = ensure_experiment(client, params.tracking.experiment)
        all_tags = {
            "git.commit": git_commit(),
            "version.torch": torch.__version__,
            "version.transformers": transformers.__version__,
            "version.peftcore": peftcore.__version__,
            "peft.method": params.peft.method,
            "task": params.model.task,
            **tags,
            **params.tracking.tags,
        }
        run = client.create_run(
            experiment_id,
            run_name=params.tracking.run_name,
            tags={k: str(v) for k, v in all_tags.items() if v},
        )
        tracker = cls(run.info.run_id)
        tracker.log_params(params)
        return tracker

    @property
    def experiment_id(self) -> str:
        return self.client.get_run(self.run_id).info.experiment_id

    def url(self) -> str | None:
        return run_url(self.run_id, self.experiment_id)

    def set_tag(self, key: str, value: Any) -> None:
        self.client.set_tag(self.run_id, key, str(value))

    def log_params(self, params: FinetuneParams) -> None:
        from mlflow.entities import Param

        flat = {k: param_value(v) for k, v in params.flat().items()}
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self.client.log_text(self.run_id, params.to_yaml(), "params.yaml")

    def log_dataset(self, data: TokenizedData, params: FinetuneParams) -> None:
        """The dataset as an MLflow input; its digest is the raw-data fingerprint."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        self.set_tag("dataset.fingerprint", data.fingerprint)
        # mlflow marks Dataset.profile abstract, but MetaDataset (not an ABC) leaves it unimplemented.
        dataset = MetaDataset(  # type: ignore[abstract]
            source=_dataset_source(params), name=_dataset_name(params), digest=data.fingerprint[:36]
        )
        # Through the client, by run id: the fluent `with mlflow.start_run(run_id=...)` would end the
        # run (status FINISHED) on leaving the block, before training has even started.
        tags = {
            MLFLOW_DATASET_CONTEXT: "training",
            "num_train": str(data.num_train),
            "num_validation": str(data.num_validation),
            "num_test": str(data.num_test),
        }
        entity = DatasetInput(dataset._to_mlflow_entity(), [InputTag(k, v) for k, v in tags.items()])
        _log_inputs_once_created(self.client, self.run_id, entity)
        # Rows cut or dropped by data.truncation, over all splits (per split in the dataset tag).
        self.log_metrics({"data_truncated_rows": data.truncated_rows, "data_dropped_rows": data.dropped_rows})
        self.set_tag("dataset.truncation", json.dumps(data.truncation, sort_keys=True))

    def log_wrap(self, wrap: WrapResult) -> None:
        from mlflow.entities import Param

        self.log_metrics(
            {
                "trainable_params": wrap.trainable_params,
                "all_params": wrap.all_params,
                "trainable_percent": wrap.trainable_percent,
            },
            step=0,
        )
        items = [Param(f"peft_config.{k}", param_value(v)) for k, v in sorted(wrap.peft_config.items())]
        self.client.log_batch(self.run_id, params=items)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_step(self, step: int, logs: dict[str, float]) -> None:
        """A training log: `loss` → train_loss; validation metrics (val_*), learning_rate, grad_norm kept."""
        renamed = {}
        for key, value in logs.items():
            if key == "loss":
                renamed["train_loss"] = value
            elif key.startswith("val_") and key.endswith(
                ("_runtime", "_samples_per_second", "_steps_per_second")
            ):
                continue
            elif key in ("learning_rate", "grad_norm") or key.startswith("val_"):
                renamed[key] = value
        self._steps.add(renamed, step=step)

    def flush_steps(self, timeout_s: float) -> None:
        """Send the training steps an outage held back, waiting up to `timeout_s` seconds for the
        server; raises `TrackingUnavailable` if it stays gone (the run must not be closed as complete)."""
        self._steps.flush(timeout_s)

    def log_train(self, result: TrainResult) -> str:
        """Figures, the adapter as an artifact, its checksum; returns the checksum."""
        weights = os.path.join(result.adapter_dir, "adapter_model.safetensors")
        size = sum(
            os.path.getsize(os.path.join(result.adapter_dir, f)) for f in os.listdir(result.adapter_dir)
        )
        self.log_metrics(
            {
                "train_runtime_s": result.train_runtime_s,
                "train_tokens_per_s": result.train_tokens_per_s,
                "peak_memory_mb": result.peak_memory_mb,
                "adapter_size_bytes": size,
            },
            step=result.global_step,
        )
        checksum = file_sha256(weights)
        self.set_tag("adapter.sha256", checksum)
        self.set_tag("device", result.device)
        self.set_tag("train.strategy", result.strategy)
        if result.resumed_from:  # a rerun of an interrupted run: where its training picked up
            self.set_tag("train.resumed_from", os.path.basename(result.resumed_from))
        self.client.log_artifacts(self.run_id, result.adapter_dir, artifact_path="adapter")
        self._log_loss_curve(result.log_history)
        return checksum

    def _log_loss_curve(self, history: list[dict[str, Any]]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
        # The Trainer's history names the validation loss eval_loss.
        evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if train:
            ax.plot(*zip(*train, strict=True), label="train_loss")
        if evals:
            ax.plot(*zip(*evals, strict=True), marker="o", label="val_loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        self.client.log_figure(self.run_id, fig, "loss_curve.png")
        plt.close(fig)

    def log_eval(self, result: EvalResult, step: int, prefix: str = "eval_") -> None:
        """Metrics as `<prefix><name>`: eval_ for the test split, val_ for the validation split."""
        self.log_metrics({f"{prefix}{k}": v for k, v in result.metrics.items()}, step=step)

    def log_predictions(self, result: EvalResult, baseline: EvalResult | None = None) -> None:
        """Every test prediction as the table `eval_predictions.json` (input, reference, prediction,
        correct, and baseline_prediction when the untrained adapter was scored too)."""
        if not result.predictions:
            return
        columns = {k: [str(row.get(k, "")) for row in result.predictions] for k in result.predictions[0]}
        if baseline is not None and len(baseline.predictions) == len(result.predictions):
            columns["baseline_prediction"] = [str(row["prediction"]) for row in baseline.predictions]
        self.client.log_table(self.run_id, data=columns, artifact_file="eval_predictions.json")
        if result.figure:  # image tasks: the first test images with predicted vs true labels / masks
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "eval_predictions.png")
                Path(path).write_bytes(result.figure)
                self.client.log_artifact(self.run_id, path)

    def log_model(self, params: FinetuneParams, data: TokenizedData, trained: TrainResult) -> str:
        """The adapter as an MLflow model, linked to this run and its final metrics; returns its id
        (also the run tag `model.id`)."""
        from flows.tracking.model import log_adapter_model

        model_id = log_adapter_model(self.run_id, params, data, trained, step=trained.global_step)
        self.set_tag(MODEL_ID_TAG, model_id)
        return model_id

    def log_publish(self, commit_id: str, repo_id: str, url: str | None = None) -> None:
        self.set_tag("hub.commit", commit_id)
        self.set_tag("hub.repo_id", repo_id)
        if url:
            self.set_tag("hub.commit_url", url)

    def start_system_metrics(self, interval_s: float = 10.0) -> None:
        """Sample CPU, memory, disk, network (and GPU) use into `system/*` metrics until `finish`
        (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides the interval)."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(
            self.run_id, sampling_interval=interval_s, tracking_uri=tracking_uri()
        )
        self._monitor.start()

    def finish(self, status: str = "FINISHED") -> None:
        if status == "FINISHED" and self._steps.pending_steps:
            raise TrackingUnavailable(
                f"run {self.run_id} cannot finish with training steps {self._steps.pending_steps} unsent"
            )
        if self._monitor is not None:
            self._monitor.finish()  # flushes what it sampled, while the run is still open
            self._monitor = None
        self.client.set_terminated(self.run_id, status=status)

    def fail(self) -> None:
        """Mark the run FAILED, best effort: it never raises (the flow's own error is what matters)
        and never waits out the client's minutes of retries on a server that is gone. The run then
        stays RUNNING in MLflow; the flow run's error says why."""
        if not self._healthy():
            logger.warning(
                "MLflow run %s cannot be marked FAILED: the tracking server is unreachable", self.run_id
            )
            return  # the system metrics thread is a daemon: it ends with this process
        try:
            self.finish("FAILED")
        except Exception as exc:  # reporting a failure must not replace it
            logger.warning("MLflow run %s could not be marked FAILED (%s)", self.run_id, type(exc).__name__)

    # -- reading back ----------------------------------------------------------------------------
    def params_yaml(self) -> str:
        self._get_run()  # an unknown run id is reported as such, not as a missing file
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.client.download_artifacts(self.run_id, "params.yaml", tmp)
                with open(path, encoding="utf-8") as fh:
                    return fh.read()
        except (OSError, mlflow.exceptions.MlflowException) as exc:
            raise ValueError(
                f"MLflow run {self.run_id} has no params.yaml artifact (not a peftflow run?): {exc}"
            ) from None

    def _get_run(self) -> Any:
        try:
            return self.client.get_run(self.run_id)
        except mlflow.exceptions.MlflowException as exc:
            raise ValueError(
                f"MLflow run {self.run_id!r} not found at {tracking_uri()}: {exc.message}"
            ) from None

    def summary(self) -> dict[str, Any]:
        run = self._get_run()
        return {
            "run_id": self.run_id,
            "metrics": dict(run.data.metrics),
            "tags": dict(run.data.tags),
            "params": dict(run.data.params),
            "name": run.info.run_name,
            "status": run.info.status,
        }


def search_runs(experiment: str) -> list[dict[str, Any]]:
    """Runs of an experiment, newest first, as plain dicts (for `peftflow compare`)."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"MLflow experiment {experiment!r} does not exist at {tracking_uri()}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=200)
    return [
        {
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "status": r.info.status,
            "metrics": dict(r.data.metrics),
            "params": dict(r.data.params),
            "tags": dict(r.data.tags),
        }
        for r in runs
    ]


def param_value(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
    return text[:6000]


def _dataset_source(params: FinetuneParams) -> Any:
    d = params.data
    if d.dataset is not None:
        from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

        return HuggingFaceDatasetSource(
            path=d.dataset, config_name=d.config_name, data_dir=d.data_dir, revision=d.revision
        )
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    return resolve_dataset_source(os.path.abspath(d.train_file or "."))


def _dataset_name(params: FinetuneParams) -> str:
    d = params.data
    if d.dataset is not None:
        return d.dataset
    return os.path.basename(os.path.dirname(os.path.abspath(d.train_file or "."))) or "dataset"
