"""`retrain`: skip on unchanged data, register every trained adapter, promote only a better one.

The registry rules are tested on hand-made runs (exact metric values, both directions, min_delta,
rollback); the flow is run for real on a tiny model under the Prefect test server, with MLflow on
SQLite, including a publish failure that must leave the previous champion in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.params import FinetuneParams, PromotionParams
from flows.tracking import registry
from tests.flows import fixtures

MODEL = "tiny-sentiment"


def _run_with(client: Any, metrics: dict[str, float], experiment: str = "reg") -> str:
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def _aliases(client: Any, name: str = MODEL) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def test_first_version_becomes_champion_then_only_better_ones(mlflow_store: Any) -> None:
    policy = PromotionParams(registered_model=MODEL, metric="val_accuracy", min_delta=0.01)
    first = registry.register_and_decide(_run_with(mlflow_store, {"val_accuracy": 0.70}), policy)
    assert (first.version, first.promoted, first.previous_champion) == ("1", True, None)
    assert _aliases(mlflow_store) == {"champion": "1"}

    # Better, but by less than min_delta: a challenger; the champion stays.
    close = registry.register_and_decide(_run_with(mlflow_store, {"val_accuracy": 0.705}), policy)
    assert (close.version, close.promoted, close.champion_value) == ("2", False, 0.70)
    assert "does not beat champion v1" in close.reason
    assert _aliases(mlflow_store) == {"champion": "1", "challenger": "2"}

    better = registry.register_and_decide(_run_with(mlflow_store, {"val_accuracy": 0.80}), policy)
    assert (better.version, better.promoted, better.previous_champion) == ("3", True, "1")
    assert _aliases(mlflow_store) == {"champion": "3", "challenger": "2"}
    version = mlflow_store.get_model_version(MODEL, "3")
    assert version.source.endswith("/adapter") and version.tags["retrain.decision"] == "champion"
    assert version.tags["val_accuracy"] == "0.8"


def test_minimize_direction_and_nan(mlflow_store: Any) -> None:
    policy = PromotionParams(registered_model=MODEL, metric="val_loss", direction="minimize")
    assert registry.register_and_decide(_run_with(mlflow_store, {"val_loss": 0.5}), policy).promoted
    assert not registry.register_and_decide(_run_with(mlflow_store, {"val_loss": 0.6}), policy).promoted
    assert registry.register_and_decide(_run_with(mlflow_store, {"val_loss": 0.4}), policy).promoted
    assert not registry.is_better(float("nan"), 0.4, "minimize", 0.0)
    assert registry.is_better(0.4, float("nan"), "maximize", 0.0)


def test_rollback_restores_previous_champion_or_removes_the_alias(mlflow_store: Any) -> None:
    policy = PromotionParams(registered_model=MODEL)
    first = registry.register_and_decide(_run_with(mlflow_store, {"val_accuracy": 0.6}), policy)
    registry.rollback(first, "publish failed")
    assert _aliases(mlflow_store) == {}
    assert registry.champion(MODEL) is None

    again = registry.register_and_decide(_run_with(mlflow_store, {"val_accuracy": 0.6}), policy)
    better = registry.register_and_decide(_run_with(mlflow_store, {"val_accuracy": 0.9}), policy)
    assert _aliases(mlflow_store)["champion"] == better.version
    registry.rollback(better, "HTTP 503 from the Hub")
    assert _aliases(mlflow_store)["champion"] == again.version
    tags = mlflow_store.get_model_version(MODEL, better.version).tags
    assert tags["retrain.decision"] == "rolled-back" and "503" in tags["retrain.rollback_reason"]


def test_a_champion_score_on_the_new_data_replaces_the_logged_one(mlflow_store: Any) -> None:
    policy = PromotionParams(registered_model=MODEL)
    registry.register_and_decide(_run_with(mlflow_store, {"val_accuracy": 0.9}), policy)
    # On the new validation split the champion scores 0.6: a new 0.7 beats it (it would not beat 0.9).
    new = _run_with(mlflow_store, {"val_accuracy": 0.7})
    decision = registry.register_and_decide(
        new, policy, champion_value=0.6, champion_note="on this run's validation split", champion_version="1"
    )
    assert decision.promoted and decision.champion_value == 0.6
    assert "(0.6 on this run's validation split;" in decision.reason
    # A score of another version than the one holding the alias now is not used: v2 logged 0.7.
    late = registry.register_and_decide(
        _run_with(mlflow_store, {"val_accuracy": 0.65}), policy, champion_value=0.1, champion_version="1"
    )
    assert not late.promoted and late.champion_value == 0.7 and "as logged by its run" in late.reason


def test_missing_metric_is_a_clear_error(mlflow_store: Any) -> None:
    run_id = _run_with(mlflow_store, {"val_f1": 0.5})
    with pytest.raises(ValueError, match="has no metric 'val_accuracy'"):
        registry.register_and_decide(run_id, PromotionParams(registered_model=MODEL))


def test_policy_metric_must_be_one_the_run_logs(tmp_path: Path) -> None:
    from flows.retrain import check_policy

    params = _params(tmp_path, "unused")
    check_policy(params, PromotionParams(metric="val_f1"))
    with pytest.raises(ValueError, match="is not logged by this run"):
        check_policy(params, PromotionParams(metric="val_rouge1"))
    # Selection never reads the test split: a test metric is refused, and so is a recipe without
    # a validation split.
    with pytest.raises(ValueError, match=r"'eval_f1' is a test metric.*use 'val_f1'"):
        check_policy(params, PromotionParams(metric="eval_f1"))
    no_validation = params.model_copy(
        update={"data": params.data.model_copy(update={"validation_file": None})}
    )
    with pytest.raises(
        ValueError, match="chooses the champion on the validation split and this recipe has none"
    ):
        check_policy(no_validation, PromotionParams(metric="val_f1"))
    with pytest.raises(ValueError, match="letters, digits"):
        PromotionParams(registered_model="bad name/with slash")


def _params(root: Path, model_path: str, n_train: int = 16, **train: Any) -> FinetuneParams:
    return FinetuneParams.model_validate(
        {
            "model": {"name_or_path": model_path, "task": "seq_cls", "dtype": "float32"},
            "data": {
                "train_file": str(root / "train.jsonl"),
                "validation_file": str(root / "validation.jsonl"),
                "test_file": str(root / "test.jsonl"),
            },
            "peft": {"r": 2, "lora_alpha": 4},
            "train": {"max_steps": 3, "batch_size": 4, "eval_every": "no", "logging_steps": 1, **train},
            "eval": {"metrics": ["accuracy", "f1"]},
            "tracking": {"experiment": "retrain-test"},
            "output_dir": str(root / "out"),
        }
    )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_retrain_skips_unchanged_data_and_promotes_only_better(
    mlflow_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import retrain as retrain_module
    from flows.retrain import is_skipped, retrain
    from flows.steps import publish as publish_step
    from flows.steps.data import tokenize
    from flows.steps.evaluate import evaluate

    model = fixtures.model_dir(tmp_path / "models", "seq_cls")
    fixtures.write_jsonl(tmp_path / "train.jsonl", fixtures.rows("seq_cls", 16))
    fixtures.write_jsonl(tmp_path / "validation.jsonl", fixtures.rows("seq_cls", 6))
    fixtures.write_jsonl(tmp_path / "test.jsonl", fixtures.rows("seq_cls", 8))
    params = _params(tmp_path, model)
    policy = PromotionParams(registered_model=MODEL)

    first = retrain(params, policy)
    assert first["skipped"] is False and first["decision"]["promoted"] is True
    assert _aliases(mlflow_store) == {"champion": "1"}
    run = mlflow_store.get_run(first["run_id"])
    assert run.data.tags[registry.TAG_OUTCOME] == "promoted"
    assert run.data.tags[registry.TAG_MODEL] == MODEL

    # Unchanged data and recipe: Completed, with a message, and nothing trained or registered.
    state = retrain(params, policy, return_state=True)
    assert is_skipped(state), state
    assert first["run_id"] in (state.message or "")
    assert len(mlflow_store.search_model_versions(f"name='{MODEL}'")) == 1
    experiment = mlflow_store.get_experiment_by_name("retrain-test")
    assert len(mlflow_store.search_runs([experiment.experiment_id])) == 1

    # New data, a new validation split too: v2 is compared with v1 scored on the SAME new validation
    # split (v1's logged accuracy was on the old one), and takes `champion` only if it beats that.
    # The test split plays no part: it changes too, and the decision must not read it.
    fixtures.write_jsonl(tmp_path / "train.jsonl", fixtures.rows("seq_cls", 24))
    positives = [row for row in fixtures.rows("seq_cls", 16) if row["label"] == "positive"]
    fixtures.write_jsonl(tmp_path / "validation.jsonl", positives)
    fixtures.write_jsonl(tmp_path / "test.jsonl", fixtures.rows("seq_cls", 6)[1::2])
    second = retrain(params, policy)
    decision = second["decision"]
    assert decision["version"] == "2" and decision["previous_champion"] == "1"
    data = tokenize(params, str(tmp_path / "out" / "cache" / "tokenized"))
    v1_adapter = registry.download_adapter(first["run_id"], str(tmp_path / "v1"))
    v1_now = evaluate(params, data, v1_adapter, split="validation").metrics["accuracy"]
    assert decision["champion_value"] == v1_now
    assert decision["value"] == mlflow_store.get_run(second["run_id"]).data.metrics["val_accuracy"]
    assert "on this run's validation split" in decision["reason"]
    assert mlflow_store.get_run(second["run_id"]).data.metrics["champion_val_accuracy"] == v1_now
    better = decision["value"] > decision["champion_value"]
    assert decision["promoted"] is better
    assert _aliases(mlflow_store) == ({"champion": "2"} if better else {"champion": "1", "challenger": "2"})

    # A promotion whose publish fails is rolled back: the champion stays where it was.
    champion_before = registry.champion(MODEL)

    attempts: list[int] = []

    def hub_down(*args: Any, **kwargs: Any) -> str:
        attempts.append(1)
        raise ConnectionError("Hub unreachable")

    publishing = params.model_copy(update={"publish": params.publish.model_copy(update={"repo_id": "u/m"})})
    with monkeypatch.context() as m:
        m.setattr(publish_step, "publish", hub_down)
        # An outage is retried (3 times, 10-90 s apart): retried here at once, so the test does not sleep.
        m.setattr(
            retrain_module,
            "publish_task",
            retrain_module.publish_task.with_options(retry_delay_seconds=0, retry_jitter_factor=None),
        )
        m.setattr(registry, "is_better", lambda *a: True)  # this version would be promoted
        m.setenv("HF_TOKEN", "hf_test_token")
        failed = retrain(publishing, PromotionParams(registered_model=MODEL, force=True), return_state=True)
    assert failed.is_failed()
    assert len(attempts) == 4  # the first try and its 3 retries, then the rollback
    assert registry.champion(MODEL) == champion_before
    v3 = mlflow_store.get_model_version(MODEL, "3")
    assert v3.tags["retrain.decision"] == "rolled-back"
    assert "Hub unreachable" in v3.tags["retrain.rollback_reason"]
    assert mlflow_store.get_run(v3.run_id).data.tags[registry.TAG_OUTCOME] == "publish-failed"

    # A failed promotion is not a finished training: the next retrain trains again.
    again = retrain(params, policy, return_state=True)
    assert not is_skipped(again)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_promotion_publishes_to_the_hub_and_links_the_commit(
    mlflow_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_hub: Any
) -> None:
    from huggingface_hub import HfApi
    from prefect.client.orchestration import get_client

    from flows.retrain import retrain

    monkeypatch.setenv("HF_TOKEN", "hf_local_write")
    model = fixtures.model_dir(tmp_path / "models", "seq_cls")
    fixtures.write_jsonl(tmp_path / "train.jsonl", fixtures.rows("seq_cls", 16))
    fixtures.write_jsonl(tmp_path / "validation.jsonl", fixtures.rows("seq_cls", 6))
    fixtures.write_jsonl(tmp_path / "test.jsonl", fixtures.rows("seq_cls", 8))
    config = _params(tmp_path, model).model_dump(mode="json")
    config["model"]["hub_id"] = "user/tiny-bert"
    config["publish"] = {"repo_id": "user/tiny-bert-lora"}
    params = FinetuneParams.model_validate(config)

    state = retrain(params, PromotionParams(registered_model=MODEL), return_state=True)
    assert state.is_completed(), state
    result = state.result()
    commit = HfApi(token="hf_local_write").list_repo_commits("user/tiny-bert-lora")[0].commit_id
    assert result["hub_commit"] == commit
    assert result["hub_commit_url"] == f"{local_hub.url}/user/tiny-bert-lora/commit/{commit}"
    version = mlflow_store.get_model_version(MODEL, "1")
    assert version.tags["hub.commit"] == commit and version.tags["hub.repo_id"] == "user/tiny-bert-lora"
    assert mlflow_store.get_run(result["run_id"]).data.tags["hub.commit_url"] == result["hub_commit_url"]
    assert _aliases(mlflow_store) == {"champion": "1"}

    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    links = {a.key: a.data for a in artifacts}
    assert links["hub-commit"] == f"[Hub commit]({result['hub_commit_url']})"
    assert "Published: " + result["hub_commit_url"] in str(links["retrain-decision"])
