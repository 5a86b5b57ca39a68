"""Bad input for the methods beside LoRA: each fails with a ValueError / TypeError naming the field (or
module) and the fix, before the model is modified."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import peftcore
from tests import tiny


def state(model: nn.Module) -> dict[str, Any]:
    """Everything that must not change when a call is refused: module types and every tensor."""
    return {
        "modules": [(n, type(m).__name__) for n, m in model.named_modules()],
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    after = state(model)
    assert after["modules"] == before["modules"]
    assert after["grad"] == before["grad"]
    for key, value in before["tensors"].items():
        assert torch.equal(after["tensors"][key], value), key


# -- fields of another method -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config_cls", "kwargs", "owner"),
    [
        ("IA3Config", {"r": 8}, "LoraConfig"),
        ("LoraConfig", {"feedforward_modules": ["fc2"]}, "IA3Config"),
    ],
)
def test_field_of_another_method_names_that_method(
    config_cls: str, kwargs: dict[str, Any], owner: str
) -> None:
    field = next(iter(kwargs))
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{field}'.*a field of [^.]*{owner}"):
        getattr(peftcore, config_cls)(**kwargs)


# -- IA3 ------------------------------------------------------------------------------------------
def test_ia3_feedforward_modules_must_be_targets() -> None:
    with pytest.raises(
        ValueError, match=r"`feedforward_modules` should be a subset of `target_modules`.*\['q'\]"
    ):
        peftcore.IA3Config(target_modules=["k", "v"], feedforward_modules=["q"])


def test_ia3_unsupported_layer_refused_before_any_change() -> None:
    model = tiny.build("llama")
    before = state(model)
    config = peftcore.IA3Config(target_modules=["embed_tokens", "q_proj"], feedforward_modules=[])
    with pytest.raises(ValueError, match=r"'model\.embed_tokens' is a Embedding, which \(IA\)³ cannot wrap"):
        peftcore.get_peft_model(model, config)
    assert_unchanged(model, before)


def test_ia3_unknown_architecture_needs_feedforward_modules() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    before = state(model)
    with pytest.raises(
        ValueError, match=r"Please specify `feedforward_modules`.*pass feedforward_modules=\[...\]"
    ):
        peftcore.get_peft_model(model, peftcore.IA3Config(target_modules=["0"]))
    assert_unchanged(model, before)


def test_ia3_mixed_batch_is_refused() -> None:
    model = peftcore.get_peft_model(tiny.build("llama"), peftcore.IA3Config(task_type="CAUSAL_LM")).eval()
    batch = tiny.inputs("llama")
    with pytest.raises(ValueError, match=r"mixed-adapter batches are not supported by \(IA\)³"):
        model(**batch, adapter_names=["default", "default"])


def test_ia3_second_adapter_with_other_feedforward_split_refused() -> None:
    model = peftcore.get_peft_model(
        tiny.build("llama"),
        peftcore.IA3Config(target_modules=["down_proj"], feedforward_modules=["down_proj"]),
    )
    snapshot = copy.deepcopy(state(model))
    with pytest.raises(
        ValueError, match=r"feed-forward module.*give every adapter the same feedforward_modules"
    ):
        model.add_adapter("other", peftcore.IA3Config(target_modules=["down_proj"], feedforward_modules=[]))
    assert_unchanged(model, snapshot)
