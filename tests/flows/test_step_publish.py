"""The publish step against a local Hub driven by the real `huggingface_hub` client.

A tiny BERT classifier is built locally and its files are uploaded to the local Hub as `user/tiny-bert`;
the adapter names that Hub id as its base model, so a fresh process that knows only the endpoint and a
token can load base + adapter by repo id and must reproduce the in-process logits. Failure paths
(401, 429, 503, persistent 5xx, a local base path) must leave the local adapter directory untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

import flows.steps.publish as publish_step
from flows.params import FinetuneParams
from flows.steps.model import build_peft_config
from flows.steps.publish import publish
from peftcore import get_peft_model
from tests.flows import fixtures
from tests.support.hub_server import LocalHub

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_REPO = "user/tiny-bert"
ADAPTER_REPO = "user/tiny-bert-lora"
TOKEN = "hf_local_write"
METRICS = {"accuracy": 0.875, "f1": 0.8}
FINGERPRINT = "fp-1234abcd"
TEXTS = ["the movie was great", "a terrible boring film", "i loved the music but the ending was weak"]


def _params(base_dir: str, repo_id: str = ADAPTER_REPO, **data: Any) -> FinetuneParams:
    return FinetuneParams.model_validate(
        {
            "model": {"name_or_path": base_dir, "hub_id": BASE_REPO, "task": "seq_cls", "dtype": "float32"},
            "data": data or {"dataset": "user/reviews"},
            "peft": {"r": 4, "init_lora_weights": False},  # non-zero B: the adapter changes the logits
            "publish": {"repo_id": repo_id, "commit_message": "Add tiny adapter"},
        }
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Base model dir, adapter dir, fixed inputs and the in-process logits (built once per module)."""
    from transformers import AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("publish")
    base_dir = fixtures.model_dir(root / "models", "seq_cls")
    params = _params(base_dir)
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    torch.manual_seed(0)
    model = get_peft_model(base, build_peft_config(params))
    with torch.no_grad():  # every adapter weight non-zero and far from init, head (modules_to_save) included
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    model.eval()
    adapter_dir = root / "adapter"
    model.save_pretrained(adapter_dir)
    tokenizer = fixtures.tokenizer_for("seq_cls")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        logits = model(**inputs).logits
    return SimpleNamespace(base_dir=base_dir, adapter_dir=str(adapter_dir), inputs=inputs, logits=logits)


@pytest.fixture
def adapter(built: SimpleNamespace, tmp_path: Path) -> str:
    """A private copy of the adapter dir per test, so a buggy test cannot spoil the next one."""
    import shutil

    return shutil.copytree(built.adapter_dir, tmp_path / "adapter")


@pytest.fixture
def hub(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    """The local Hub with HF_TOKEN set to the `user` namespace's write token."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return local_hub


def _snapshot(directory: str) -> dict[str, bytes]:
    root = Path(directory)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n"), card[:80]
    meta, _ = card[4:].split("\n---\n", 1)
    return yaml.safe_load(meta)


def test_publish_uploads_adapter_and_card(built: SimpleNamespace, adapter: str, hub: LocalHub) -> None:
    before = _snapshot(adapter)
    commit = publish(_params(built.base_dir), adapter, METRICS, FINGERPRINT, base_delay_s=0.01)

    repo = hub.repos[ADAPTER_REPO]
    assert commit == repo.refs["main"]
    assert repo.private  # publish.private defaults to True
    assert repo.commits[commit].title == "Add tiny adapter"
    assert set(repo.commits[commit].files) >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "README.md",
    }
    config = json.loads(hub.file(ADAPTER_REPO, "adapter_config.json"))
    assert config["base_model_name_or_path"] == BASE_REPO
    assert hub.file(ADAPTER_REPO, "adapter_model.safetensors") == before["adapter_model.safetensors"]

    card = hub.file(ADAPTER_REPO, "README.md").decode()
    meta = _front_matter(card)
    assert meta["base_model"] == BASE_REPO
    assert meta["library_name"] == "peft"
    assert {"peft", "lora", "peftcore", "seq_cls"} <= set(meta["tags"])
    assert meta["datasets"] == ["user/reviews"]
    assert meta["metrics"] == ["accuracy", "f1"]
    assert "| accuracy | 0.8750 |" in card and "| f1 | 0.8000 |" in card
    assert FINGERPRINT in card
    assert _snapshot(adapter) == before  # the card went into a staged copy, not the adapter dir


def test_card_has_no_datasets_for_local_files(built: SimpleNamespace, adapter: str, hub: LocalHub) -> None:
    params = _params(built.base_dir, train_file="train.jsonl")
    publish(params, adapter, METRICS, FINGERPRINT, base_delay_s=0.01)
    meta = _front_matter(hub.file(ADAPTER_REPO, "README.md").decode())
    assert "datasets" not in meta
    assert meta["base_model"] == BASE_REPO


_LOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from peftcore import AutoPeftModelForSequenceClassification

    repo_id, inputs_path, out_path = sys.argv[1:]
    model = AutoPeftModelForSequenceClassification.from_pretrained(repo_id).eval()
    with torch.no_grad():
        torch.save(model(**torch.load(inputs_path)).logits, out_path)
    """
)


@pytest.mark.slow
def test_fresh_process_loads_published_adapter_by_id(
    built: SimpleNamespace, adapter: str, hub: LocalHub, tmp_path: Path
) -> None:
    # The base model goes up with the real client too, so the Hub id in the adapter resolves.
    api = HfApi(token=TOKEN)
    api.create_repo(BASE_REPO, private=False)
    api.upload_folder(repo_id=BASE_REPO, folder_path=built.base_dir)
    publish(_params(built.base_dir), adapter, METRICS, FINGERPRINT, base_delay_s=0.01)

    torch.save(built.inputs, tmp_path / "inputs.pt")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_OFFLINE"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        HF_ENDPOINT=hub.url,
        HF_HUB_OFFLINE="0",
        HF_HOME=str(tmp_path / "fresh_hf_home"),  # an empty cache: every file comes over HTTP
        HF_TOKEN=TOKEN,  # the adapter repo is private
        HF_HUB_DISABLE_XET="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    workdir = tmp_path / "elsewhere"  # no local directory named like the repo ids
    workdir.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD_SCRIPT,
            ADAPTER_REPO,
            str(tmp_path / "inputs.pt"),
            str(tmp_path / "out.pt"),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logits = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(logits, built.logits, rtol=0, atol=1e-6)
    # Both came over HTTP from the local Hub (the client downloads by the commit sha it resolved).
    fetched = {
        (c.path.split("/resolve/")[0], c.path.rsplit("/", 1)[1]) for c in hub.calls("resolve", method="GET")
    }
    assert (f"/{ADAPTER_REPO}", "adapter_model.safetensors") in fetched
    assert (f"/{BASE_REPO}", "model.safetensors") in fetched


def test_bad_token_is_a_permission_error(
    built: SimpleNamespace, adapter: str, hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    before = _snapshot(adapter)
    with pytest.raises(PermissionError, match=r"401.*HF_TOKEN") as info:
        publish(_params(built.base_dir), adapter, METRICS, FINGERPRINT, base_delay_s=0.01)
    assert "hf_not_a_real_token" not in str(info.value)  # the secret never reaches logs
    assert hub.repos == {}
    assert hub.calls("commit") == []
    assert len(hub.calls("create_repo")) == 1  # 401 is not retried
    assert _snapshot(adapter) == before


def test_commit_429_is_retried(built: SimpleNamespace, adapter: str, hub: LocalHub) -> None:
    hub.fail_next("commit", status=429, retry_after=0)
    before = _snapshot(adapter)
    commit = publish(_params(built.base_dir), adapter, METRICS, FINGERPRINT, base_delay_s=0.01)
    assert [c.status for c in hub.calls("commit")] == [429, 200]
    assert commit == hub.repos[ADAPTER_REPO].refs["main"]
    assert len(hub.repos[ADAPTER_REPO].history(commit)) == 2  # the initial commit + exactly one upload
    assert _snapshot(adapter) == before


def test_create_repo_503_is_retried(built: SimpleNamespace, adapter: str, hub: LocalHub) -> None:
    hub.fail_next("create_repo", status=503, retry_after=None)
    before = _snapshot(adapter)
    commit = publish(_params(built.base_dir), adapter, METRICS, FINGERPRINT, base_delay_s=0.01)
    assert [c.status for c in hub.calls("create_repo")] == [503, 200]
    assert commit == hub.repos[ADAPTER_REPO].refs["main"]
    assert _snapshot(adapter) == before


def test_persistent_5xx_surfaces_after_attempts(
    built: SimpleNamespace, adapter: str, hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    monkeypatch.setattr(publish_step, "time", SimpleNamespace(sleep=delays.append))
    hub.fail_next("commit", status=500, times=100, retry_after=None)
    before = _snapshot(adapter)
    with pytest.raises(HfHubHTTPError) as info:
        publish(_params(built.base_dir), adapter, METRICS, FINGERPRINT, base_delay_s=0.01, attempts=3)
    assert info.value.response.status_code == 500
    assert [c.status for c in hub.calls("commit")] == [500, 500, 500]
    assert delays == pytest.approx([0.01, 0.02])  # exponential backoff, no sleep after the last try
    assert len(hub.repos[ADAPTER_REPO].commits) == 1  # only the repo's initial commit: nothing uploaded
    assert _snapshot(adapter) == before


def test_retry_after_is_honoured_up_to_a_cap(
    built: SimpleNamespace, adapter: str, hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    monkeypatch.setattr(publish_step, "time", SimpleNamespace(sleep=delays.append))
    hub.fail_next("commit", status=429, retry_after=2)
    hub.fail_next("commit", status=429, retry_after=3600)
    publish(_params(built.base_dir), adapter, METRICS, FINGERPRINT, base_delay_s=0.01, max_delay_s=5.0)
    assert delays == [2.0, 5.0]
    assert [c.status for c in hub.calls("commit")] == [429, 429, 200]


@pytest.mark.parametrize("kind", ["absolute", "dot-relative", "missing"])
def test_local_base_path_is_rejected_before_any_call(
    built: SimpleNamespace, adapter: str, hub: LocalHub, kind: str
) -> None:
    config_path = Path(adapter) / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = {
        "absolute": built.base_dir,
        "dot-relative": "./models/seq_cls",
        "missing": None,
    }[kind]
    config_path.write_text(json.dumps(config))
    before = _snapshot(adapter)
    with pytest.raises(ValueError, match=r"base_model_name_or_path.*model\.hub_id"):
        publish(_params(built.base_dir), adapter, METRICS, FINGERPRINT, base_delay_s=0.01)
    assert hub.calls() == []
    assert _snapshot(adapter) == before
