"""The data-changed event: its fingerprint is the tokenize step's, its resource names the data source."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import events
from flows.params import FinetuneParams
from flows.stack.deployments import DEFAULT_SPEC, build, load_triggers
from flows.stack.serve import load_spec
from flows.steps import data as data_step
from tests.flows import fixtures


def _params(tmp_path: Path, train: str, **data: object) -> FinetuneParams:
    return FinetuneParams.model_validate(
        {
            "model": {"name_or_path": fixtures.model_dir(tmp_path / "models", "seq_cls"), "task": "seq_cls"},
            "data": {"train_file": train, "validation_fraction": 0.25, "test_fraction": 0.25, **data},
            "eval": {"metrics": ["accuracy"]},
        }
    )


def test_event_fingerprint_is_the_tokenized_fingerprint_and_follows_the_bytes(tmp_path: Path) -> None:
    train = fixtures.write_jsonl(tmp_path / "train.jsonl", fixtures.rows("seq_cls", 16))
    params = _params(tmp_path, train)
    event = events.data_changed_event(params)
    tokenized = data_step.tokenize(params, str(tmp_path / "cache"))
    assert event.event == events.DATA_CHANGED
    assert event.payload["fingerprint"] == tokenized.fingerprint
    assert event.resource.id == events.resource_id(params)
    assert event.resource.name == tokenized.source
    # The recipe travels as the flow takes it.
    assert FinetuneParams.model_validate(event.payload["params"]) == params

    fixtures.write_jsonl(train, fixtures.rows("seq_cls", 17))  # one row more, same path
    changed = events.data_changed_event(params)
    assert changed.payload["fingerprint"] != event.payload["fingerprint"]
    assert changed.resource.id == event.resource.id  # the same dataset, changed


def test_resource_names_the_source_not_the_recipe(tmp_path: Path) -> None:
    train = fixtures.write_jsonl(tmp_path / "train.jsonl", fixtures.rows("seq_cls", 16))
    other = fixtures.write_jsonl(tmp_path / "other.jsonl", fixtures.rows("seq_cls", 16))
    base = _params(tmp_path, train)
    tuned = base.model_copy(update={"train": base.train.model_copy(update={"learning_rate": 1e-3})})
    assert events.resource_id(tuned) == events.resource_id(base)
    assert events.resource_id(_params(tmp_path, other)) != events.resource_id(base)
    assert events.resource_id(base).startswith("peftflow.data.")


def test_notify_without_a_server_says_which_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    train = fixtures.write_jsonl(tmp_path / "train.jsonl", fixtures.rows("seq_cls", 16))
    with (
        temporary_settings(updates={PREFECT_API_URL: None}),
        pytest.raises(ValueError, match="PREFECT_API_URL"),
    ):
        events.notify_data(_params(tmp_path, train))


def test_served_retrain_carries_the_event_trigger() -> None:
    spec = {d["name"]: d for d in load_spec(DEFAULT_SPEC)}
    (trigger,) = load_triggers(spec["retrain"])
    assert trigger.expect == {events.DATA_CHANGED}
    assert trigger.match.model_dump()["prefect.resource.id"] == events.RESOURCE_PREFIX + "*"
    assert trigger.parameters == {
        "params": "{{ event.payload.params }}",
        "data_fingerprint": "{{ event.payload.fingerprint }}",
    }
    served = {d.name: d for d in build(list(spec.values()), schedules=False)}
    assert len(served["retrain"].triggers) == 1 and not served["finetune"].triggers
    with pytest.raises(ValueError, match=r"retrain.*invalid triggers"):
        load_triggers({"name": "retrain", "triggers": [{"type": "event", "within": "soon"}]})
