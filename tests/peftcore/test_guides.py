"""HF PEFT's prompt-tuning and IA3 task guides run with `peft` replaced by `peftcore` (examples/).

Each guide example runs twice on its offline stand-in, once per library, with the same seed: the
losses, the answers and the trained weights must agree, and each library must load the adapter the
other saved. The stand-in's own figures (the loss falls, answers become labels) are checked too.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example(name: str) -> Any:
    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.fixture(scope="module")
def prompt_runs() -> dict[str, dict[str, Any]]:
    pytest.importorskip("peft")
    example = _example("prompt_tuning_clm")
    return {lib: example.main(["--library", lib]) for lib in ("peftcore", "peft")}


@pytest.fixture(scope="module")
def ia3_runs() -> dict[str, dict[str, Any]]:
    pytest.importorskip("peft")
    example = _example("ia3_seq2seq")
    return {lib: example.main(["--library", lib]) for lib in ("peftcore", "peft")}


def _same_config(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    volatile = {"base_model_name_or_path", "tokenizer_name_or_path", "peft_version"}  # temp paths, versions

    def comparable(config: dict[str, Any]) -> dict[str, Any]:  # module lists are sets saved in any order
        return {k: sorted(v) if isinstance(v, list) else v for k, v in config.items() if k not in volatile}

    assert comparable(ours) == comparable(theirs)


def test_prompt_tuning_guide_runs_on_peftcore_as_on_peft(prompt_runs: dict[str, dict[str, Any]]) -> None:
    ours, theirs = prompt_runs["peftcore"], prompt_runs["peft"]
    assert ours["losses"] == pytest.approx(theirs["losses"], rel=1e-5)
    assert ours["generations"] == theirs["generations"]
    assert torch.allclose(ours["prompt"], theirs["prompt"], atol=1e-5)
    assert ours["files"] == theirs["files"]
    _same_config(ours["config"], theirs["config"])
    assert ours["config"]["prompt_tuning_init"] == "TEXT" and ours["config"]["num_virtual_tokens"] == 8
    # The stand-in's figures: the prompt learns the answer format; answers are label words.
    first, last = sum(ours["losses"][:6]) / 6, sum(ours["losses"][-6:]) / 6
    assert last < first / 4, (first, last)
    assert all(g.strip() in ("complaint", "no complaint") for g in ours["generations"]), ours["generations"]
    assert ours["reloaded_same"] and theirs["reloaded_same"]


def test_ia3_guide_runs_on_peftcore_as_on_peft(ia3_runs: dict[str, dict[str, Any]]) -> None:
    ours, theirs = ia3_runs["peftcore"], ia3_runs["peft"]
    assert ours["losses"] == pytest.approx(theirs["losses"], rel=1e-5)
    assert ours["answers"] == theirs["answers"]
    assert ours["vectors"].keys() == theirs["vectors"].keys()
    for name, vector in ours["vectors"].items():
        assert torch.allclose(vector, theirs["vectors"][name], atol=1e-5), name
    _same_config(ours["config"], theirs["config"])
    assert sorted(ours["config"]["target_modules"]) == ["k", "v", "wi_1"]  # mT5's defaults, as HF PEFT's
    # The stand-in's figures: the held-out loss falls by >10x and most answers are the right label.
    assert ours["eval_losses"][-1] < ours["eval_losses"][0] / 10, ours["eval_losses"]
    assert ours["accuracy"] >= 0.5, ours["answers"]
    assert ours["reloaded_same"] and theirs["reloaded_same"]


def test_guide_adapters_cross_load(tmp_path: Path) -> None:
    """The adapter each library saves from the guides' configs loads in the other with the same output."""
    peft = pytest.importorskip("peft")
    import peftcore

    standin = _example("standin")
    from transformers import AutoModelForSeq2SeqLM

    seq2seq = _example("ia3_seq2seq")
    base_dir = seq2seq.standin_model(str(tmp_path / "base"), ["positive negative neutral", "some news ."], 0)
    batch = standin.word_tokenizer(["positive negative neutral", "some news ."], eos_after=True)(
        ["some news ."], return_tensors="pt"
    )
    decoder = torch.tensor([[0, 4]])
    for src, dst in ((peftcore, peft), (peft, peftcore)):
        torch.manual_seed(0)
        model = src.get_peft_model(
            AutoModelForSeq2SeqLM.from_pretrained(base_dir), src.IA3Config(task_type="SEQ_2_SEQ_LM")
        )
        with torch.no_grad():  # move the vectors off 1 so the check is not of the identity
            for p in model.parameters():
                if p.requires_grad:
                    p.mul_(torch.linspace(0.5, 1.5, p.numel()).view_as(p))
        out = tmp_path / f"from-{src.__name__}"
        model.save_pretrained(out)
        assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "IA3"
        loaded = dst.PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(base_dir), out).eval()
        model.eval()
        with torch.no_grad():
            want = model(**batch, decoder_input_ids=decoder).logits
            got = loaded(**batch, decoder_input_ids=decoder).logits
        assert torch.allclose(want, got, atol=1e-6)
