"""The `finetune` flow: tokenize → wrap → train → evaluate → publish, tracked in one MLflow run.

Tasks are thin: a decorator and one call into `flows.steps`. They pass paths and small results,
never live models. The flow body reads as the pipeline's table of contents.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from flows import tracking
from flows.params import FinetuneParams
from flows.retries import NETWORK_RETRIES, is_network_error
from flows.steps import EvalResult, TokenizedData, TrainResult, WrapResult
from flows.steps import data as data_step
from flows.steps import evaluate as evaluate_step
from flows.steps import model as model_step
from flows.steps import publish as publish_step
from flows.steps import train as train_step

TRAINING_LIMIT = "peftflow-training"
SLOT_RELEASE_WAIT_S = 120.0  # longer than the Prefect client's own retries (~60 s) of a state change


def run_key(params: FinetuneParams, data_fingerprint: str) -> str:
    """Identifies a run's training inputs — the recipe (not tracking/publishing) and the data's content
    fingerprint: same key → same run dir → resume. New data at the same path is a new key, so a
    checkpoint is never resumed on other data."""
    # The timeout bounds how long an attempt may take, not what it trains.
    relevant = params.model_dump(
        mode="json", exclude={"tracking": True, "publish": True, "train": {"timeout_minutes"}}
    )
    return hashlib.sha256(json.dumps([relevant, data_fingerprint], sort_keys=True).encode()).hexdigest()[:16]


def preflight(params: FinetuneParams) -> None:
    """Every check that can fail without loading a model or data runs here, first."""
    from flows.metrics import check_metrics

    check_metrics(params.eval.metrics, params.model.task)
    for name in ("train_file", "validation_file", "test_file"):
        path = getattr(params.data, name)
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"data.{name}={path!r} does not exist")
    if params.publish.repo_id and not os.environ.get("HF_TOKEN"):
        raise ValueError(
            f"publish.repo_id={params.publish.repo_id!r} is set but HF_TOKEN is not; export HF_TOKEN "
            "(tokens never go in parameters) or leave publish.repo_id empty"
        )
    model_step.check_quantization(params)
    if params.train.launcher == "accelerate":
        from flows.distributed import launch

        launch.check_config(params)
    tracking.check_reachable()


@task(name="tokenize", cache_policy=NO_CACHE, **NETWORK_RETRIES)
def tokenize_task(params: FinetuneParams, cache_dir: str) -> TokenizedData:
    return data_step.tokenize(params, cache_dir)


@task(name="wrap", cache_policy=NO_CACHE, **NETWORK_RETRIES)
def wrap_task(params: FinetuneParams, label_names: list[str] | None) -> WrapResult:
    return model_step.wrap(params, label_names)


@task(name="train", cache_policy=NO_CACHE)
def train_task(params: FinetuneParams, data: TokenizedData, run_dir: str, run_id: str) -> TrainResult:
    with training_slot():
        if params.train.launcher == "accelerate" or params.train.timeout_minutes:
            from flows.distributed import launch

            return launch.train(params, data, run_dir, run_id)
        tracker = tracking.RunTracker(run_id)
        return train_step.train(
            params,
            data,
            run_dir,
            on_log=tracker.log_step,
            on_end=functools.partial(tracker.flush_steps, params.tracking.flush_timeout_s),
        )


@contextmanager
def training_slot() -> Iterator[None]:
    """One training at a time on a machine (one GPU): every training takes a slot of the global
    concurrency limit `peftflow-training`. With a Prefect server the limit is created (one slot) when
    nobody has, and the slot is strict: a training never runs without one. Prefect's ephemeral mode
    (no server, one process) needs none.

    Giving the slot back needs the server. A training that ran through a restart of the Prefect
    server waits (up to SLOT_RELEASE_WAIT_S) for it to answer again before releasing; if the release
    still fails, the finished training is kept (a warning says so) and the slot's lease expires on
    the server by itself."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        yield
        return
    ensure_training_limit()
    trained = False
    try:
        with concurrency(TRAINING_LIMIT, occupy=1, strict=True):
            _logger().info("took a slot of %r", TRAINING_LIMIT)
            yield
            trained = True
            wait_for_prefect(SLOT_RELEASE_WAIT_S)
        _logger().info("gave the slot of %r back", TRAINING_LIMIT)
    except Exception as exc:
        if not trained or not is_network_error(exc):
            raise
        _logger().warning(
            "training finished, but its slot of %r could not be released (%s: %s); the slot's lease "
            "expires on the Prefect server by itself",
            TRAINING_LIMIT,
            type(exc).__name__,
            exc,
        )


def _logger() -> Any:
    """The run's logger (its lines show on the flow run page), or this module's outside a run."""
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def wait_for_prefect(timeout_s: float) -> bool:
    """Wait until the Prefect API answers (True), for at most `timeout_s` seconds (then False)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            if client.api_healthcheck() is None:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def ensure_training_limit(slots: int = 1) -> None:
    """Create the training limit with `slots` slots unless it exists (an existing one is kept as is)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(TRAINING_LIMIT)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # created meanwhile by another run
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=TRAINING_LIMIT, limit=slots)
                )


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(
    params: FinetuneParams, data: TokenizedData, adapter_dir: str | None
) -> dict[str, EvalResult]:
    """{"validation": ..., "test": ...} for the trained adapter; {"test": ...} for the untrained baseline."""
    if adapter_dir is None:  # the untrained baseline: fresh adapter, untrained head
        return {"test": evaluate_step.evaluate_untrained(params, data)}
    return evaluate_step.evaluate_splits(params, data, adapter_dir, ("validation", "test"))


@task(name="publish", cache_policy=NO_CACHE, **NETWORK_RETRIES)
def publish_task(
    params: FinetuneParams, adapter_dir: str, metrics: dict[str, float], fingerprint: str
) -> str:
    return publish_step.publish(params, adapter_dir, metrics, fingerprint)


@flow(name="finetune")
def finetune(params: FinetuneParams, baseline: bool = False) -> dict[str, Any]:
    """Fine-tune a base model with a PEFT adapter; returns the MLflow run id, metrics and paths.

    With `baseline`, the untrained adapter (fresh LoRA, untrained head) is evaluated first and logged
    as `baseline_<metric>`, so the run shows what training earned.
    """
    logger = get_run_logger()
    preflight(params)
    # Data problems surface while tokenizing, before an MLflow run exists: a bad input leaves no run.
    data = tokenize_task(params, os.path.join(params.output_dir, "cache", "tokenized"))
    train_step.check_selection(params, data)
    run_dir = os.path.join(params.output_dir, "runs", run_key(params, data.fingerprint))
    tracker = tracking.RunTracker.start(params, tags=prefect_tags())
    if params.tracking.system_metrics:
        tracker.start_system_metrics()
    try:
        tracker.log_dataset(data, params)
        logger.info(
            "data: %d train / %d validation / %d test rows (%s); over max_length=%d: %s",
            data.num_train,
            data.num_validation,
            data.num_test,
            "cached" if data.cached else "tokenized",
            params.data.max_length,
            truncation_summary(data),
        )
        if data.num_validation == 0 and params.train.eval_every != "no":
            logger.info(
                "no validation split: no evaluation during training (the test split is scored at the end)"
            )
        wrap = wrap_task(params, data.label_names)
        tracker.log_wrap(wrap)
        untrained = evaluate_task(params, data, None)["test"] if baseline else None
        baseline_metrics = untrained.metrics if untrained else {}
        tracker.log_metrics({f"baseline_{k}": v for k, v in baseline_metrics.items()})
        trained = train_task(params, data, run_dir, tracker.run_id)
        checksum = tracker.log_train(trained)
        scored = evaluate_task(params, data, trained.adapter_dir)
        result = scored["test"]
        if "validation" in scored:
            tracker.log_eval(scored["validation"], step=trained.global_step, prefix="val_")
        tracker.log_eval(result, step=trained.global_step)
        tracker.log_predictions(result, untrained)
        model_id = tracker.log_model(params, data, trained) if params.tracking.log_model else None
        commit = commit_url = None
        if params.publish.repo_id:
            commit = publish_task(params, trained.adapter_dir, result.metrics, data.fingerprint)
            commit_url = publish_step.commit_url(params, commit)
            tracker.log_publish(commit, params.publish.repo_id, commit_url)
    except BaseException:
        tracker.fail()
        raise
    tracker.finish()
    summary = {
        "run_id": tracker.run_id,
        "experiment_id": tracker.experiment_id,
        "metrics": result.metrics,
        "val_metrics": scored["validation"].metrics if "validation" in scored else {},
        "baseline_metrics": baseline_metrics,
        "trainable_percent": wrap.trainable_percent,
        "adapter_dir": trained.adapter_dir,
        "adapter_sha256": checksum,
        "model_id": model_id,
        "model_uri": f"models:/{model_id}" if model_id else None,
        "hub_commit": commit,
        "hub_commit_url": commit_url,
        "train_runtime_s": trained.train_runtime_s,
        "dataset_fingerprint": data.fingerprint,
        "data_cached": data.cached,
        "data_truncation": truncation_summary(data),
        "mlflow_url": tracker.url(),
    }
    run_artifacts(summary, result.predictions[: params.eval.num_logged_predictions])
    return summary


def truncation_summary(data: TokenizedData) -> str:
    """ "train 3 truncated, 1 dropped; test 0 truncated, 0 dropped" (data.truncation policy)."""
    return "; ".join(
        f"{split} {counts.get('truncated', 0)} truncated, {counts.get('dropped', 0)} dropped"
        for split, counts in data.truncation.items()
    )


def prefect_tags() -> dict[str, str | None]:
    from prefect.runtime import flow_run

    return {"prefect.flow_run_id": flow_run.get_id(), "prefect.flow_run_url": flow_run.get_flow_run_ui_url()}


def run_artifacts(summary: dict[str, Any], predictions: list[dict[str, Any]] | None = None) -> None:
    """Tables of the metrics (validation and test) and of the first test predictions, and links to the
    MLflow run / Hub commit, shown on the flow run page."""
    from prefect.artifacts import create_link_artifact, create_table_artifact

    rows = [{"metric": f"eval_{k}", "value": round(v, 6)} for k, v in sorted(summary["metrics"].items())]
    rows += [
        {"metric": f"val_{k}", "value": round(v, 6)}
        for k, v in sorted(summary.get("val_metrics", {}).items())
    ]
    create_table_artifact(rows, key="eval-metrics", description=f"MLflow run {summary['run_id']}")
    if predictions:
        create_table_artifact(
            [{k: str(v)[:300] for k, v in row.items()} for row in predictions],
            key="test-predictions",
            description=f"The first {len(predictions)} test predictions; every one is in the MLflow run's "
            "eval_predictions.json",
        )
    if summary["mlflow_url"]:
        create_link_artifact(summary["mlflow_url"], link_text="MLflow run", key="mlflow-run")
    if summary.get("hub_commit_url"):
        create_link_artifact(summary["hub_commit_url"], link_text="Hub commit", key="hub-commit")
