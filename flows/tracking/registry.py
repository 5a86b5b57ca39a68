"""The MLflow model registry side of `retrain`: adapter versions, the `champion` alias, promotion.

Every trained adapter becomes a version of one registered model: its MLflow model (`models:/<id>`, a
pyfunc; see flows.tracking.model), or the run's `adapter/` files for a run that logged none. The
`champion` alias names the version in service; a new version takes it only when its metric beats the
champion's by `min_delta`, otherwise it gets the `challenger` alias. A promotion can be undone
(`rollback`) so that promoting and publishing to the Hub succeed or fail together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flows.params import PromotionParams
from flows.tracking import MODEL_ID_TAG, _client

CHAMPION = "champion"
CHALLENGER = "challenger"
# Run tags written by `retrain`, read back to decide whether anything changed since the last training.
TAG_MODEL = "retrain.registered_model"
TAG_FINGERPRINT = "retrain.fingerprint"
TAG_OUTCOME = "retrain.outcome"
TRAINED_OUTCOMES = ("promoted", "challenger")


@dataclass
class Decision:
    """What `register_and_decide` did with a new adapter version."""

    registered_model: str
    version: str
    promoted: bool
    metric: str
    value: float
    previous_champion: str | None  # version that held `champion` before, if any
    champion_value: float | None
    reason: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class LastTraining:
    run_id: str
    fingerprint: str
    outcome: str


def last_training(experiment: str, registered_model: str) -> LastTraining | None:
    """The newest finished `retrain` run of `registered_model`, if it trained and was registered.

    None when there is none, or when the newest one ended otherwise (a failed publish): then the next
    retrain must train again rather than skip.
    """
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAG_MODEL}` = '{registered_model}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        tags = run.data.tags
        outcome = tags.get(TAG_OUTCOME)
        if outcome is None:  # interrupted before the registry step: look further back
            continue
        if outcome in TRAINED_OUTCOMES and tags.get(TAG_FINGERPRINT):
            return LastTraining(run.info.run_id, tags[TAG_FINGERPRINT], outcome)
        return None
    return None


def champion(registered_model: str, client: MlflowClient | None = None) -> str | None:
    """The version that holds the `champion` alias, or None."""
    client = client or _client()
    try:
        model = client.get_registered_model(registered_model)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = model.aliases.get(CHAMPION)
    return str(version) if version is not None else None


def is_better(new: float, old: float, direction: str, min_delta: float) -> bool:
    if math.isnan(new):
        return False
    if math.isnan(old):
        return True
    return new > old + min_delta if direction == "maximize" else new < old - min_delta


@dataclass
class ChampionSource:
    version: str
    run_id: str
    params: dict[str, str]  # the champion run's logged params (dotted keys)


def champion_source(registered_model: str) -> ChampionSource | None:
    """The champion version, its run and that run's params; None when there is no champion."""
    client = _client()
    version = champion(registered_model, client)
    if version is None:
        return None
    run_id = client.get_model_version(registered_model, version).run_id
    if not run_id:
        return None
    return ChampionSource(version, run_id, dict(client.get_run(run_id).data.params))


def download_adapter(run_id: str, dest: str) -> str:
    """The run's `adapter/` artifact, downloaded under `dest`; returns its local path."""
    return str(_client().download_artifacts(run_id, "adapter", dest))


def register_and_decide(
    run_id: str,
    policy: PromotionParams,
    description: str = "",
    champion_value: float | None = None,
    champion_note: str = "",
    champion_version: str | None = None,
) -> Decision:
    """Register the run's adapter as a new version and give it `champion` or `challenger`.

    `champion_value`, when given, is the metric of champion `champion_version` measured on this run's
    validation data (see `retrain`); it is used only if that version still holds the alias. Otherwise the
    value the champion's run logged is used.
    """
    client = _client()
    run = client.get_run(run_id)
    if policy.metric not in run.data.metrics:
        raise ValueError(
            f"run {run_id} has no metric {policy.metric!r} (it has: {sorted(run.data.metrics)}); "
            "set policy.metric to one of the val_* metrics"
        )
    value = float(run.data.metrics[policy.metric])
    name = policy.registered_model
    try:
        client.create_registered_model(name, description="LoRA adapters trained by peftflow retrain")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    previous = champion(name, client)
    # The version is the run's MLflow model when it logged one (loadable with mlflow.pyfunc), else its
    # adapter files.
    model_id = run.data.tags.get(MODEL_ID_TAG)
    version = client.create_model_version(
        name,
        source=f"models:/{model_id}" if model_id else f"runs:/{run_id}/adapter",
        model_id=model_id,
        run_id=run_id,
        tags={policy.metric: str(value), "dataset.fingerprint": run.data.tags.get("dataset.fingerprint", "")},
        description=description or None,
    ).version
    if champion_version != previous:  # measured on another version than the one now in place
        champion_value, champion_note = None, ""
    if previous is None:
        promoted, reason = True, "first version: no champion yet"
    else:
        if champion_value is None:
            prev_run = client.get_model_version(name, previous).run_id
            prev_metrics = client.get_run(prev_run).data.metrics if prev_run else {}
            champion_value = prev_metrics.get(policy.metric)
            champion_note = champion_note or "as logged by its run"
        if champion_value is None:
            promoted, reason = True, f"champion v{previous} has no {policy.metric}"
        else:
            promoted = is_better(value, champion_value, policy.direction, policy.min_delta)
            word = "beats" if promoted else "does not beat"
            reason = (
                f"{policy.metric} {value:.6g} {word} champion v{previous} ({champion_value:.6g} "
                f"{champion_note}; {policy.direction}, min_delta {policy.min_delta:g})"
            )
    client.set_registered_model_alias(name, CHAMPION if promoted else CHALLENGER, version)
    client.set_model_version_tag(name, version, "retrain.decision", "champion" if promoted else "challenger")
    return Decision(name, str(version), promoted, policy.metric, value, previous, champion_value, reason)


def rollback(decision: Decision, why: str) -> None:
    """Undo a promotion: `champion` goes back to the previous version (or is removed)."""
    client = _client()
    name = decision.registered_model
    if decision.previous_champion is not None:
        client.set_registered_model_alias(name, CHAMPION, decision.previous_champion)
    else:
        client.delete_registered_model_alias(name, CHAMPION)
    client.set_model_version_tag(name, decision.version, "retrain.decision", "rolled-back")
    client.set_model_version_tag(name, decision.version, "retrain.rollback_reason", why[:500])


def record_publish(decision: Decision, commit_id: str, repo_id: str, url: str) -> None:
    client = _client()
    for key, value in (("hub.commit", commit_id), ("hub.repo_id", repo_id), ("hub.commit_url", url)):
        client.set_model_version_tag(decision.registered_model, decision.version, key, value)
