"""PiSSA and OLoRA initialisations against Hugging Face `peft` (a test-only oracle), and the save-time
conversion to a plain LoRA that loads on the unmodified base (`path_initial_model_for_weight_conversion`)."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import peftcore
from tests import tiny
from tests.peftcore.methods import perturb

INITS = ["pissa", "pissa_niter_4", "olora"]
ARCHS = ["llama", "gpt2"]  # Linear and GPT-2's Conv1D (fan_in_fan_out)


def config(lib: Any, arch: str, init: str, **extra: Any) -> Any:
    targets = ["c_attn", "mlp.c_proj"] if arch == "gpt2" else ["q_proj", "v_proj", "down_proj"]
    return lib.LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=targets, init_lora_weights=init, **extra
    )


def logits(model: Any, arch: str) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**tiny.inputs(arch)).logits


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("init", INITS)
def test_init_matches_hf_and_keeps_the_output(init: str, arch: str) -> None:
    peft = pytest.importorskip("peft")
    if init == "olora" and arch == "gpt2":
        pytest.skip(
            "HF PEFT's OLoRA factors GPT-2's Conv1D weight untransposed: its forward fails with a shape error"
        )
    base = tiny.build(arch)
    states = {}
    for lib in (peftcore, peft):
        torch.manual_seed(0)
        model = lib.get_peft_model(copy.deepcopy(base), config(lib, arch, init))
        torch.testing.assert_close(logits(model, arch), logits(base, arch), atol=1e-4, rtol=1e-4)
        states[lib.__name__] = {
            k.replace(".default", ""): v for k, v in model.get_base_model().state_dict().items()
        }
    assert states["peftcore"].keys() == states["peft"].keys()
    for key, value in states["peft"].items():
        torch.testing.assert_close(states["peftcore"][key], value, atol=1e-5, rtol=1e-4, msg=key)
    moved = [k for k in states["peftcore"] if k.endswith("base_layer.weight")]
    assert moved and not torch.allclose(
        states["peftcore"][moved[0]],
        base.state_dict()[moved[0].replace("base_model.model.", "").replace(".base_layer", "")],
    )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_converted_adapter_loads_on_the_unmodified_base_in_both_libraries(
    init: str, arch: str, tmp_path: Path
) -> None:
    peft = pytest.importorskip("peft")
    base = tiny.build(arch)
    torch.manual_seed(0)
    model = peftcore.get_peft_model(copy.deepcopy(base), config(peftcore, arch, init))
    model.save_pretrained(tmp_path / "initial")
    perturb(model, seed=3, scale=0.05)  # "training"
    trained = logits(model, arch)
    model.save_pretrained(
        tmp_path / "converted", path_initial_model_for_weight_conversion=tmp_path / "initial"
    )
    saved = json.loads((tmp_path / "converted" / "adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"], saved["init_lora_weights"]) == (8, 16, True)
    initial = json.loads((tmp_path / "initial" / "adapter_config.json").read_text())
    assert initial["init_lora_weights"] is True and initial["r"] == 4
    for lib in (peftcore, peft):
        loaded = lib.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "converted")
        torch.testing.assert_close(logits(loaded, arch), trained, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(trained, logits(base, arch), atol=1e-3)


def test_conversion_files_match_hf(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    base = tiny.build("llama")
    files = {}
    for lib in (peftcore, peft):
        torch.manual_seed(0)
        model = lib.get_peft_model(copy.deepcopy(base), config(lib, "llama", "pissa"))
        root = tmp_path / lib.__name__
        model.save_pretrained(root / "initial")
        perturb(model, seed=3, scale=0.05)
        model.save_pretrained(
            root / "converted", path_initial_model_for_weight_conversion=str(root / "initial")
        )
        files[lib.__name__] = peftcore.load_peft_weights(str(root / "converted"))
    assert files["peftcore"].keys() == files["peft"].keys()
    for key, value in files["peft"].items():
        torch.testing.assert_close(files["peftcore"][key], value, atol=1e-5, rtol=1e-4, msg=key)


def test_bad_init_and_conversion_input_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'pissa' or 'pissa_niter_\\[number of iters\\]', got pissa_nitre_3"):
        peftcore.LoraConfig(init_lora_weights="pissa_nitre_3")
    model = tiny.build("llama")
    before = [(n, type(m)) for n, m in model.named_modules()]
    with pytest.raises(ValueError, match=r"works on Linear / Conv1D layers only.*embed_tokens"):
        peftcore.get_peft_model(
            model, peftcore.LoraConfig(target_modules=["embed_tokens"], init_lora_weights="olora")
        )
    assert [(n, type(m)) for n, m in model.named_modules()] == before
    peft_model = peftcore.get_peft_model(model, peftcore.LoraConfig(init_lora_weights="pissa"))
    with pytest.raises(ValueError, match=r"holds no adapter_model\.safetensors"):
        peft_model.save_pretrained(
            tmp_path / "out", path_initial_model_for_weight_conversion=tmp_path / "missing"
        )
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
    ia3 = peftcore.get_peft_model(tiny.build("llama"), peftcore.IA3Config())
    ia3.save_pretrained(tmp_path / "ia3")
    with pytest.raises(ValueError, match=r"not supported for .*IA3 adapters"):
        ia3.save_pretrained(tmp_path / "ia3-out", path_initial_model_for_weight_conversion=tmp_path / "ia3")
