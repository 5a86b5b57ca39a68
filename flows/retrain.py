"""The `retrain` flow: retraining, nightly or on a data-changed event (flows.events), that promotes an
adapter only when it is better.

1. Fingerprint the data (and the recipe); when nothing changed since the last trained run of this
   registered model, finish Completed with a "skipped" message: no training.
2. Otherwise run the `finetune` flow (without publishing), register the adapter as a new version in
   the MLflow model registry, and compare it with the `champion` on `policy.metric`, a validation
   metric — by default with the champion scored on this run's validation split too, since metrics on
   different data do not compare (`policy.compare_on`; logged as `champion_<metric>` on the new run).
   The test split plays no part in the decision: it is scored once per run, for the record.
3. A better version takes the `champion` alias and is published to the Hub; a publish failure moves the
   alias back (promotion and publishing succeed or fail together). A worse one becomes `challenger`.

Two retrains never train at once: the deployment's concurrency limit queues a retrain that fires while
one runs (it then skips when that one trained on the same data), and every training takes the
machine's training slot (see `finetune.train_task`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from flows.finetune import finetune, preflight, publish_task, run_artifacts, run_key, tokenize_task
from flows.params import FinetuneParams, PromotionParams
from flows.steps import TokenizedData
from flows.steps import evaluate as evaluate_step
from flows.steps import publish as publish_step
from flows.tracking import RunTracker, param_value, registry


def check_policy(params: FinetuneParams, policy: PromotionParams) -> None:
    """The compared metric must be a validation metric the run will log (`val_<metric>`), and the run
    must have a validation split; checked before any work."""
    produced = {f"val_{name.rsplit('/', 1)[-1].removesuffix('.py')}" for name in params.eval.metrics}
    if policy.metric.startswith("eval_"):
        raise ValueError(
            f"policy.metric={policy.metric!r} is a test metric; the champion is chosen on the validation "
            f"split, so use {'val_' + policy.metric.removeprefix('eval_')!r} (the test split is scored once, "
            "for the record)"
        )
    if not any(policy.metric == p or policy.metric.startswith(p + "_") for p in produced):
        raise ValueError(
            f"policy.metric={policy.metric!r} is not logged by this run: eval.metrics={params.eval.metrics} "
            f"give {sorted(produced)}"
        )
    if params.data.has_validation_source() is False:
        raise ValueError(
            "retrain chooses the champion on the validation split and this recipe has none: set "
            "data.validation_fraction (carved from train) or data.validation_file"
        )


def check_validation(data: TokenizedData) -> None:
    if data.num_validation == 0:
        raise ValueError(
            f"retrain chooses the champion on the validation split and {data.source} has none: set "
            "data.validation_fraction, data.validation_file or data.validation_split"
        )


def retrain_fingerprint(data_fingerprint: str, params: FinetuneParams) -> str:
    """Changes when the raw data or the training recipe changes (not with tracking/publish settings)."""
    key = run_key(params, data_fingerprint)
    return hashlib.sha256(json.dumps([data_fingerprint, key]).encode()).hexdigest()[:32]


# On a run started by a data-changed event: the data fingerprint the event carried.
TAG_EVENT_FINGERPRINT = "retrain.event_fingerprint"

# A champion scored on this run's validation data must take the same inputs and give the same outputs.
COMPARABLE = (
    "model.name_or_path",
    "model.revision",
    "model.task",
    "data.label_names",
    "data.format",
    "data.prompt_template",
    "data.chat_template",
)


@dataclass
class ChampionScore:
    version: str | None
    value: float | None
    note: str


@task(name="score-champion", cache_policy=NO_CACHE)
def score_champion_task(
    params: FinetuneParams, data: TokenizedData, policy: PromotionParams
) -> ChampionScore:
    """The champion's metric on the same validation split as the new adapter (None: use its logged value)."""
    source = registry.champion_source(policy.registered_model)
    if source is None:
        return ChampionScore(None, None, "")
    flat = params.flat()
    differ = [k for k in COMPARABLE if source.params.get(k) != param_value(flat.get(k))]
    if differ:
        return ChampionScore(source.version, None, f"as logged by its run: its {', '.join(differ)} differ")
    with tempfile.TemporaryDirectory() as tmp:
        adapter = registry.download_adapter(source.run_id, tmp)
        metrics = evaluate_step.evaluate(params, data, adapter, split="validation").metrics
    value = metrics.get(policy.metric.removeprefix("val_"))
    note = "on this run's validation split" if value is not None else ""
    return ChampionScore(source.version, value, note)


@task(name="register-and-decide", cache_policy=NO_CACHE)
def decide_task(run_id: str, policy: PromotionParams, champion: ChampionScore) -> registry.Decision:
    return registry.register_and_decide(
        run_id,
        policy,
        description=f"retrain run {run_id}",
        champion_value=champion.value,
        champion_note=champion.note,
        champion_version=champion.version,
    )


@flow(name="retrain")
def retrain(
    params: FinetuneParams,
    policy: PromotionParams = PromotionParams(),  # noqa: B008
    data_fingerprint: str | None = None,
) -> Any:
    """Retrain on the current data; skip when unchanged; promote to `champion` only when better.

    `data_fingerprint` is set by a data-changed event (flows.events): the fingerprint the sender saw.
    The run always trains on the data as it is when it runs, and says so when that differs.
    """
    logger = get_run_logger()
    preflight(params)
    check_policy(params, policy)
    data = tokenize_task(params, os.path.join(params.output_dir, "cache", "tokenized"))
    check_validation(data)
    if data_fingerprint is not None:
        if data_fingerprint == data.fingerprint:
            logger.info(
                "started by a data-changed event for this data (fingerprint %s)", data_fingerprint[:12]
            )
        else:
            logger.warning(
                "the data changed again after the event (event fingerprint %s, now %s): using it as it is now",
                data_fingerprint[:12],
                data.fingerprint[:12],
            )
    fingerprint = retrain_fingerprint(data.fingerprint, params)
    last = registry.last_training(params.tracking.experiment, policy.registered_model)
    if last is not None and last.fingerprint == fingerprint and not policy.force:
        message = (
            f"Skipped: data and recipe unchanged since run {last.run_id} "
            f"(fingerprint {fingerprint[:12]}, outcome {last.outcome}); nothing to train."
        )
        logger.info(message)
        create_markdown_artifact(f"**retrain skipped**\n\n{message}", key="retrain-decision")
        return Completed(message=message, data={"skipped": True, "last_run_id": last.run_id})

    # Publishing happens here, after the registry decision, never inside the training run.
    inner = params.model_copy(deep=True)
    inner.publish = inner.publish.model_copy(update={"repo_id": None})
    inner.tracking.tags = {
        **inner.tracking.tags,
        registry.TAG_MODEL: policy.registered_model,
        registry.TAG_FINGERPRINT: fingerprint,
        **({TAG_EVENT_FINGERPRINT: data_fingerprint} if data_fingerprint else {}),
    }
    summary = finetune(inner)
    tracker = RunTracker(summary["run_id"])
    champion = ChampionScore(None, None, "")
    if policy.compare_on == "current_data":
        champion = score_champion_task(params, data, policy)
        if champion.value is not None:
            tracker.log_metrics({f"champion_{policy.metric}": champion.value})
    decision = decide_task(summary["run_id"], policy, champion)
    logger.info("registry: version %s — %s", decision.version, decision.reason)
    commit = url = None
    if decision.promoted and params.publish.repo_id:
        commit = _publish_or_roll_back(params, summary, decision, tracker)
        url = publish_step.commit_url(params, commit)
        registry.record_publish(decision, commit, params.publish.repo_id, url)
        tracker.log_publish(commit, params.publish.repo_id, url)
    tracker.set_tag(registry.TAG_OUTCOME, "promoted" if decision.promoted else "challenger")
    published = {"hub_commit": commit, "hub_commit_url": url}
    run_artifacts({**summary, **published})  # the retrain run's page shows them too
    _decision_artifact(decision, url)
    return {**summary, **published, "skipped": False, "decision": decision.as_dict()}


def _publish_or_roll_back(
    params: FinetuneParams, summary: dict[str, Any], decision: registry.Decision, tracker: RunTracker
) -> str:
    repo_id = params.publish.repo_id
    assert repo_id is not None
    try:
        commit = publish_task(
            params, summary["adapter_dir"], summary["metrics"], summary["dataset_fingerprint"]
        )
    except BaseException as exc:
        registry.rollback(decision, f"publish to {repo_id} failed: {exc}")
        tracker.set_tag(registry.TAG_OUTCOME, "publish-failed")
        raise
    return commit


def _decision_artifact(decision: registry.Decision, commit: str | None) -> None:
    verdict = "promoted to **champion**" if decision.promoted else "kept as **challenger**"
    lines = [
        f"### {decision.registered_model} v{decision.version}: {verdict}",
        "",
        decision.reason,
        "",
        "| | version | " + decision.metric + " |",
        "|---|---|---|",
        f"| new | {decision.version} | {decision.value:.6g} |",
    ]
    if decision.previous_champion is not None:
        old = "-" if decision.champion_value is None else f"{decision.champion_value:.6g}"
        lines.append(f"| previous champion | {decision.previous_champion} | {old} |")
    if commit:
        lines += ["", f"Published: {commit}"]
    create_markdown_artifact("\n".join(lines), key="retrain-decision")


def is_skipped(state: State) -> bool:
    """True for a `retrain` run that finished without training (for callers and tests)."""
    return state.is_completed() and (state.message or "").startswith("Skipped:")
