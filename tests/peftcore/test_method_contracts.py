"""Behaviour contracts for the adapter-layer methods beside LoRA (IA3, LoHa, LoKr, AdaLoRA), on every
tiny architecture each method supports.

Per method × architecture: identity at init (where the method starts as the identity), a perturbed
adapter changing the output, merged == unmerged, merge idempotent, unmerge restoring the base weights,
`disable_adapter()` giving the base output, only adapter (and saved-head) parameters training and
nothing else moving in an AdamW step, `merge_and_unload` / `unload`, and a save → load round trip
whose files hold exactly the method's keys (FORMAT.md). Several adapters per model are covered too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import peftcore
from peftcore import PeftModel
from tests import tiny
from tests.peftcore.methods import METHODS, MethodSpec, build, perturb

CASES = [(m, a) for m, spec in METHODS.items() for a in spec.archs]
IDS = [f"{m}-{a}" for m, a in CASES]
MERGE_TOL = {"atol": 2e-5, "rtol": 1e-5}

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*fan_in_fan_out.*:UserWarning", "ignore:Unmerge result can be inaccurate:UserWarning"
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def out(model: Any, arch: str) -> torch.Tensor:
    model.eval()
    return tiny.output(model, tiny.inputs(arch))


def base_weights(model: Any) -> dict[str, torch.Tensor]:
    """The frozen base tensors, keyed as in the plain model (adapter layers' `base_layer.` dropped)."""
    out: dict[str, torch.Tensor] = {}
    for name, p in model.get_base_model().named_parameters():
        if p.requires_grad:
            continue
        out[name.replace("base_layer.", "")] = p.detach().clone()
    return out


@pytest.mark.parametrize(("method", "arch"), CASES, ids=IDS)
def test_identity_at_init_and_only_adapters_train(method: str, arch: str) -> None:
    spec = METHODS[method]
    reference = out(tiny.build(arch), arch)
    model = build(peftcore, spec, arch)
    torch.testing.assert_close(out(model, arch), reference, atol=1e-6, rtol=1e-6)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    head = r"\.(classifier|score)\.modules_to_save\." if tiny.TASK[arch] == "SEQ_CLS" else r"(?!)"
    for name in trainable:
        assert any(f".{s}." in name for s in spec.key_suffixes) or re.search(head, name), name


@pytest.mark.parametrize(("method", "arch"), CASES, ids=IDS)
def test_perturbed_merge_unmerge_disable(method: str, arch: str) -> None:
    spec = METHODS[method]
    base_out = out(tiny.build(arch), arch)
    model = build(peftcore, spec, arch)
    perturb(model, seed=1)
    before = base_weights(model)
    adapted = out(model, arch)
    assert not torch.allclose(adapted, base_out, atol=1e-4)
    with model.disable_adapter():
        torch.testing.assert_close(out(model, arch), base_out, atol=1e-6, rtol=1e-6)
    model.merge_adapter()
    torch.testing.assert_close(out(model, arch), adapted, **MERGE_TOL)
    with pytest.warns(UserWarning, match="already merged"):
        model.merge_adapter()  # idempotent: changes nothing
    torch.testing.assert_close(out(model, arch), adapted, **MERGE_TOL)
    model.unmerge_adapter()
    after = base_weights(model)
    assert before.keys() == after.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, atol=1e-5, rtol=1e-5, msg=key)
    torch.testing.assert_close(out(model, arch), adapted, **MERGE_TOL)


@pytest.mark.parametrize(("method", "arch"), CASES, ids=IDS)
def test_merge_and_unload_then_unload(method: str, arch: str) -> None:
    spec = METHODS[method]
    model = build(peftcore, spec, arch)
    perturb(model, seed=2)
    adapted = out(model, arch)
    merged = model.merge_and_unload()
    assert type(merged) is type(tiny.build(arch))
    assert not any(spec.key_suffixes[0] in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(out(merged, arch), adapted, **MERGE_TOL)
    fresh = build(peftcore, spec, arch)
    perturb(fresh, seed=2)
    plain = fresh.unload()
    torch.testing.assert_close(out(plain, arch), out(tiny.build(arch), arch), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("method", "arch"), CASES, ids=IDS)
def test_one_adamw_step_moves_only_trainable(method: str, arch: str) -> None:
    spec = METHODS[method]
    model = build(peftcore, spec, arch, **spec.random_init)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = tiny.inputs(arch)
    if tiny.TASK[arch] == "SEQ_CLS":
        batch["labels"] = torch.tensor([0, 2])
    else:
        batch["labels"] = batch.get("decoder_input_ids", batch["input_ids"])
    model(**batch).loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        moved = not torch.equal(p.detach(), before[name])
        assert moved == (name in trainable), name


@pytest.mark.parametrize(("method", "arch"), CASES, ids=IDS)
def test_save_load_round_trip_and_file_keys(method: str, arch: str, tmp_path: Path) -> None:
    spec = METHODS[method]
    model = build(peftcore, spec, arch)
    perturb(model, seed=3)
    expected = out(model, arch)
    model.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    suffixes = "|".join(re.escape(s) for s in spec.key_suffixes)
    head = r"base_model\.model\.(classifier|score)\.(weight|bias)"
    for key in tensors:
        assert key.startswith("base_model.model."), key
        assert "default" not in key, key
        assert re.fullmatch(rf"base_model\.model\..+\.({suffixes})", key) or re.fullmatch(head, key), key
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == type(model.peft_config["default"]).PEFT_TYPE.value
    assert config["inference_mode"] is True
    loaded = PeftModel.from_pretrained(tiny.build(arch), tmp_path)
    torch.testing.assert_close(out(loaded, arch), expected, atol=1e-6, rtol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())
    trainable = PeftModel.from_pretrained(tiny.build(arch), tmp_path, is_trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())


@pytest.mark.parametrize("method", list(METHODS))
def test_several_adapters_switch_save_load_delete(method: str, tmp_path: Path) -> None:
    spec: MethodSpec = METHODS[method]
    arch = spec.archs[0]
    model = build(peftcore, spec, arch)
    perturb(model, seed=4)
    model.add_adapter("other", spec.config(peftcore, arch))
    model.set_adapter("other")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".other" in n for n in trainable)
    perturb(model, seed=5)
    outputs = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        outputs[name] = out(model, arch)
    assert not torch.allclose(outputs["default"], outputs["other"], atol=1e-4)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny.build(arch), tmp_path)
    loaded.load_adapter(tmp_path / "other", adapter_name="other")
    for name, expected in outputs.items():
        loaded.set_adapter(name)
        torch.testing.assert_close(out(loaded, arch), expected, atol=1e-6, rtol=1e-6, msg=name)
    loaded.delete_adapter("other")
    assert list(loaded.peft_config) == ["default"]
    torch.testing.assert_close(out(loaded, arch), outputs["default"], atol=1e-6, rtol=1e-6)
    assert not any(".other" in n for n, _ in loaded.named_parameters())
