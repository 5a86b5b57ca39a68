"""Hub round trips: `push_to_hub` and load-by-repo-id through the real `huggingface_hub` client.

The client (unmodified, 2.4) talks to `tests/support/hub_server.py` on 127.0.0.1. What these tests
pin about the client, so the pipeline's publish step can rely on it (or work around it):
- preupload (`POST .../preupload/{rev}`) is retried on 429/5xx, honouring `Retry-After`;
- the commit itself (`POST .../commit/{rev}`) is sent once: a 429 or 5xx surfaces as `HfHubHTTPError`
  and the caller must retry;
- a download's metadata call (`HEAD .../resolve/...`) is retried when nothing is cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from safetensors.torch import load as load_safetensors_bytes

from peftcore import AutoPeftModelForCausalLM, LoraConfig, PeftModel, get_peft_model
from tests import tiny
from tests.support.hub_server import LocalHub, hub_for_test

pytestmark = pytest.mark.server

TOKEN = "hf_local_write"  # owns the `user/` namespace on the local hub
REPO = "user/tiny-lora"
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "README.md"}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalHub]:
    with hub_for_test(monkeypatch, tmp_path / "hf_home") as running:
        yield running


@dataclass
class Pushed:
    commit: str
    base_dir: Path
    batch: dict[str, torch.Tensor]
    logits: torch.Tensor  # of the adapted model that was pushed
    base_logits: torch.Tensor


def _load_base(base_dir: Path) -> torch.nn.Module:
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(base_dir).eval()


def _adapted(base: torch.nn.Module, seed: int) -> PeftModel:
    torch.manual_seed(seed)
    # init_lora_weights=False: B is non-zero, so the adapter changes the logits and a lost or
    # mismatched download cannot pass.
    config = LoraConfig(
        task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    return get_peft_model(base, config).eval()


def _push(hub: LocalHub, tmp_path: Path, private: bool = False, seed: int = 0) -> Pushed:
    base_dir = tmp_path / "base"
    if not base_dir.exists():
        built: Any = tiny.build("llama")  # a transformers PreTrainedModel, typed as nn.Module
        built.save_pretrained(base_dir)
    # Loaded from disk so the adapter config's base_model_name_or_path names a directory AutoPeftModel can load.
    base = _load_base(base_dir)
    batch = tiny.inputs("llama")
    base_logits = tiny.output(base, batch)
    model = _adapted(base, seed)
    logits = tiny.output(model, batch)
    info = model.push_to_hub(REPO, private=private, token=TOKEN, endpoint=hub.url)
    return Pushed(info.oid, base_dir, batch, logits, base_logits)


@pytest.fixture
def pushed(hub: LocalHub, tmp_path: Path) -> Pushed:
    return _push(hub, tmp_path)


def _assert_same_logits(model: torch.nn.Module, pushed: Pushed) -> None:
    # Same weights and same ops in fp32 on CPU: the tolerance only absorbs nothing-but-rounding.
    torch.testing.assert_close(tiny.output(model, pushed.batch), pushed.logits, atol=1e-6, rtol=0)


def test_push_to_hub_commits_the_adapter(hub: LocalHub, pushed: Pushed, tmp_path: Path) -> None:
    assert not torch.allclose(pushed.logits, pushed.base_logits), "the adapter must change the output"
    repo = hub.repos[REPO]
    assert pushed.commit == repo.refs["main"]
    assert [c.title for c in repo.history(pushed.commit)] == ["Upload adapter", "initial commit"]

    info = HfApi(endpoint=hub.url).model_info(REPO)
    assert info.sha == pushed.commit and info.private is False
    assert {s.rfilename for s in info.siblings or []} >= ADAPTER_FILES

    config = json.loads(hub.file(REPO, "adapter_config.json"))
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == str(pushed.base_dir)
    weights = load_safetensors_bytes(hub.file(REPO, "adapter_model.safetensors"))
    assert weights and all(".lora_A.weight" in k or ".lora_B.weight" in k for k in weights)
    assert "library_name: peft" in hub.file(REPO, "README.md").decode()
    # Nothing went through LFS: the server told the client to upload every file inline.
    assert [c.status for c in hub.calls("commit")] == [200]


def test_push_to_existing_repo_adds_a_commit(hub: LocalHub, pushed: Pushed, tmp_path: Path) -> None:
    second = _push(hub, tmp_path, seed=1)
    assert second.commit != pushed.commit
    assert hub.repos[REPO].history(second.commit)[1].oid == pushed.commit
    # create_repo answered 409 and the client went on (exist_ok=True).
    assert [c.status for c in hub.calls("create_repo")] == [200, 409]


def test_from_pretrained_by_repo_id(hub: LocalHub, pushed: Pushed) -> None:
    model = PeftModel.from_pretrained(_load_base(pushed.base_dir), REPO)
    _assert_same_logits(model, pushed)
    downloaded = {c.path.rsplit("/", 1)[-1] for c in hub.calls("resolve", "GET")}
    assert downloaded == {"adapter_config.json", "adapter_model.safetensors"}


def test_auto_peft_model_by_repo_id(hub: LocalHub, pushed: Pushed) -> None:
    model = AutoPeftModelForCausalLM.from_pretrained(REPO)
    _assert_same_logits(model, pushed)


def test_revision_selects_a_commit(hub: LocalHub, pushed: Pushed, tmp_path: Path) -> None:
    second = _push(hub, tmp_path, seed=1)
    assert not torch.allclose(second.logits, pushed.logits)
    old = PeftModel.from_pretrained(_load_base(pushed.base_dir), REPO, revision=pushed.commit)
    _assert_same_logits(old, pushed)
    new = PeftModel.from_pretrained(_load_base(pushed.base_dir), REPO)
    _assert_same_logits(new, second)


def test_private_repo_needs_the_token(hub: LocalHub, tmp_path: Path) -> None:
    pushed = _push(hub, tmp_path, private=True)
    assert HfApi(endpoint=hub.url, token=TOKEN).model_info(REPO).private is True
    with pytest.raises(RepositoryNotFoundError):
        PeftModel.from_pretrained(_load_base(pushed.base_dir), REPO)
    model = PeftModel.from_pretrained(_load_base(pushed.base_dir), REPO, token=TOKEN)
    _assert_same_logits(model, pushed)


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        ("hf_not_a_token", 401, "Invalid credentials"),
        (None, 401, "authenticated"),
        ("hf_local_other", 403, "namespace"),  # a valid token, for another user's namespace
    ],
)
def test_push_without_write_access_fails(
    hub: LocalHub, tmp_path: Path, token: str | None, status: int, message: str
) -> None:
    model = _adapted(tiny.build("llama"), seed=0)
    with pytest.raises(HfHubHTTPError, match=message) as err:
        model.push_to_hub(REPO, token=token, endpoint=hub.url)
    assert err.value.response.status_code == status
    assert REPO not in hub.repos and not hub.calls("commit")


def test_preupload_429_is_retried_by_the_client(hub: LocalHub, tmp_path: Path) -> None:
    hub.fail_next("preupload", status=429, retry_after=0)
    pushed = _push(hub, tmp_path)
    assert [c.status for c in hub.calls("preupload")] == [429, 200]
    assert hub.repos[REPO].refs["main"] == pushed.commit


@pytest.mark.parametrize("status", [429, 503])
def test_commit_failure_is_not_retried_by_the_client(hub: LocalHub, tmp_path: Path, status: int) -> None:
    # huggingface_hub 2.4 sends the commit once (a retried commit could land twice), so a transient
    # failure reaches the caller; the pipeline's publish step retries with its own backoff.
    hub.fail_next("commit", status=status, retry_after=0)
    with pytest.raises(HfHubHTTPError) as err:
        _push(hub, tmp_path)
    assert err.value.response.status_code == status
    assert [c.status for c in hub.calls("commit")] == [status]
    assert [c.title for c in hub.repos[REPO].history(hub.repos[REPO].refs["main"])] == ["initial commit"]
    pushed = _push(hub, tmp_path)  # the caller's retry
    assert hub.repos[REPO].refs["main"] == pushed.commit


def test_download_retries_a_failed_metadata_call(hub: LocalHub, pushed: Pushed) -> None:
    hub.fail_next("resolve", status=503, retry_after=0, method="HEAD")
    model = PeftModel.from_pretrained(_load_base(pushed.base_dir), REPO)
    _assert_same_logits(model, pushed)
    heads = [(c.path.rsplit("/", 1)[-1], c.status) for c in hub.calls("resolve", "HEAD")]
    assert heads[:2] == [("adapter_config.json", 503), ("adapter_config.json", 200)]


def test_offline_loads_from_the_cache_and_names_the_cause(
    hub: LocalHub, pushed: Pushed, monkeypatch: pytest.MonkeyPatch
) -> None:
    PeftModel.from_pretrained(_load_base(pushed.base_dir), REPO)  # fills the cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.calls())
    _assert_same_logits(PeftModel.from_pretrained(_load_base(pushed.base_dir), REPO), pushed)
    assert len(hub.calls()) == before, "offline mode must not reach the server"
    # A repo that was never downloaded: the client's error (cause: offline mode) reaches the caller,
    # not a "file not found in Hub repo" that blames the repo.
    with pytest.raises(
        LocalEntryNotFoundError, match="cannot find the requested files in the local cache"
    ) as err:
        PeftModel.from_pretrained(_load_base(pushed.base_dir), "user/never-downloaded")
    assert isinstance(err.value.__cause__, OfflineModeIsEnabled)


@pytest.mark.slow
def test_hub_outage_is_not_reported_as_a_missing_file(hub: LocalHub, pushed: Pushed) -> None:
    # Every metadata call fails: the client retries (~5 s of backoff), then gives up. The weights are
    # optional per file name (safetensors, else .bin), so an outage must not read as "no weights".
    hub.fail_next("resolve", status=503, times=100, retry_after=0, method="HEAD")
    config = LoraConfig.from_dict(json.loads(hub.file(REPO, "adapter_config.json")))
    with pytest.raises(LocalEntryNotFoundError, match="check your connection"):
        PeftModel.from_pretrained(_load_base(pushed.base_dir), REPO, config=config)
    heads = [c.path.rsplit("/", 1)[-1] for c in hub.calls("resolve", "HEAD")]
    # One cache-first try, then 1 + 5 retries with backoff (huggingface_hub 2.4); no fallback to .bin.
    assert heads == ["adapter_model.safetensors"] * 7


@pytest.mark.slow
def test_fresh_process_loads_private_repo_with_hf_token(hub: LocalHub, tmp_path: Path) -> None:
    pushed = _push(hub, tmp_path, private=True)
    torch.save(pushed.batch, tmp_path / "batch.pt")
    script = textwrap.dedent(
        """
        import sys, torch
        from peftcore import AutoPeftModelForCausalLM
        model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1])
        batch = torch.load(sys.argv[2])
        with torch.no_grad():
            torch.save(model(**batch).logits, sys.argv[3])
        """
    )
    fresh_home = tmp_path / "fresh_hf_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(
        HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HOME=str(fresh_home), HF_TOKEN=TOKEN, NO_PROXY="127.0.0.1"
    )
    out = tmp_path / "logits.pt"
    proc = subprocess.run(
        [sys.executable, "-c", script, REPO, str(tmp_path / "batch.pt"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.load(out), pushed.logits, atol=1e-6, rtol=0)
    snapshot = fresh_home / "hub" / "models--user--tiny-lora" / "snapshots" / pushed.commit
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in snapshot.iterdir()}
    assert {c.user for c in hub.calls("resolve")} == {"user"}, "HF_TOKEN from the environment was sent"
