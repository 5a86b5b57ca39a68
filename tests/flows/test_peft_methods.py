"""`peft.method`: a discriminated choice of every peftcore method, each with its own fields and
defaults, building the matching peftcore config; the sweep takes any method; compare shows it."""

from __future__ import annotations

from typing import Any

import pytest

import peftcore
from flows.cli import _method_label
from flows.params import FinetuneParams, SweepGrid
from flows.peft_params import METHOD_CLASSES
from flows.steps.model import build_peft_config
from flows.steps.train import planned_steps
from flows.sweep import plan

CONFIGS = {
    "lora": peftcore.LoraConfig,
    "ia3": peftcore.IA3Config,
    "loha": peftcore.LoHaConfig,
    "lokr": peftcore.LoKrConfig,
    "adalora": peftcore.AdaLoraConfig,
    "prompt_tuning": peftcore.PromptTuningConfig,
    "p_tuning": peftcore.PromptEncoderConfig,
    "prefix_tuning": peftcore.PrefixTuningConfig,
}


def params(peft: dict[str, Any], **train: Any) -> FinetuneParams:
    return FinetuneParams.model_validate(
        {
            "model": {"name_or_path": "some/model", "task": "causal_lm"},
            "data": {"train_file": "train.jsonl", "target_column": "answer", "validation_fraction": 0.2},
            "peft": peft,
            "train": train,
        }
    )


@pytest.mark.parametrize("method", list(CONFIGS))
def test_each_method_builds_its_peftcore_config_with_its_defaults(method: str) -> None:
    p = params({"method": method})
    config = build_peft_config(p)
    assert type(config) is CONFIGS[method]
    assert (
        str(config.task_type.value if hasattr(config.task_type, "value") else config.task_type) == "CAUSAL_LM"
    )
    assert config.base_model_name_or_path == "some/model"
    own = METHOD_CLASSES[method]().config_kwargs()
    for key, value in own.items():
        got = getattr(config, key)
        got = getattr(got, "value", got)
        assert (sorted(got) if isinstance(got, set) else got) == value, key


def test_recipes_without_a_method_stay_lora() -> None:
    p = params({"r": 4})
    assert p.peft.method == "lora" and build_peft_config(p).r == 4


@pytest.mark.parametrize(
    ("peft", "message"),
    [
        (
            {"method": "lora", "num_virtual_tokens": 8},
            r"peft\.num_virtual_tokens is a field of method prompt_tuning",
        ),
        (
            {"method": "ia3", "r": 8},
            r"peft\.r is a field of method lora / loha / lokr.*set peft\.method to 'lora'",
        ),
        ({"method": "prompt_tuning", "prompt_tuning_init": "TEXT"}, r"needs peft\.prompt_tuning_init_text"),
        ({"method": "bitfit"}, r"Input tag 'bitfit'.*'lora', 'ia3'"),
        ({"method": "loha", "rank_dropout": 1.5}, r"rank_dropout"),
    ],
)
def test_bad_method_fields_are_refused_naming_the_field(peft: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        params(peft)


def test_the_form_offers_one_choice_per_method() -> None:
    schema = FinetuneParams.model_json_schema()
    # anyOf, which Prefect's form shows as one button per method (it has no widget for oneOf).
    choices = schema["properties"]["peft"]["anyOf"]
    assert "oneOf" not in schema["properties"]["peft"]
    names = [ref["$ref"].rsplit("/", 1)[-1] for ref in choices]
    assert [schema["$defs"][name]["title"] for name in names] == list(CONFIGS)  # the buttons' labels
    prompt = schema["$defs"]["PromptTuningParams"]["properties"]
    assert "num_virtual_tokens" in prompt and "r" not in prompt
    assert "num_virtual_tokens" not in schema["$defs"]["LoraParams"]["properties"]


def test_adalora_total_step_comes_from_the_run() -> None:
    p = params({"method": "adalora"}, epochs=2, batch_size=4, gradient_accumulation_steps=2)
    assert planned_steps(p, train_rows=30) == 8  # ceil(30 / 4) = 8 batches → 4 steps per epoch × 2
    assert build_peft_config(p, total_steps=planned_steps(p, 30)).total_step == 8
    assert build_peft_config(params({"method": "adalora", "total_step": 50})).total_step == 50
    assert build_peft_config(params({"method": "adalora"}, max_steps=12)).total_step == 12


def test_sweep_grid_takes_any_method() -> None:
    p = params({"method": "prompt_tuning", "prompt_tuning_init": "RANDOM"})
    grid = SweepGrid(methods=["lora", "ia3", "prompt_tuning", "adalora"], ranks=[4, 8], metric="val_loss")
    trials = plan(p, grid)
    sections = [(t.method, t.params.peft.model_dump()) for t in trials]
    assert [m for m, _ in sections] == [
        "lora",
        "lora",
        "ia3",
        "prompt_tuning",
        "prompt_tuning",
        "adalora",
        "adalora",
    ]
    assert sections[0][1]["r"] == 4 and sections[2][1]["method"] == "ia3"
    prompt = sections[4][1]
    assert prompt["num_virtual_tokens"] == 8 and prompt["prompt_tuning_init"] == "RANDOM"  # the recipe's own
    assert sections[5][1]["target_r"] == 4 and sections[5][1]["init_r"] > 4
    assert [t.name for t in trials][:3] == ["r4-lora-lr0.003", "r8-lora-lr0.003", "ia3-lr0.003"]


@pytest.mark.parametrize("method", list(CONFIGS))
def test_an_empty_learning_rate_is_the_methods_own(method: str) -> None:
    p = params({"method": method})
    assert p.train.learning_rate is None  # the recipe's choice stays visible: it set none
    assert p.learning_rate == METHOD_CLASSES[method].LEARNING_RATE
    assert p.flat()["train.learning_rate"] == p.learning_rate  # MLflow records the rate the run used
    assert params({"method": method}, learning_rate=5e-3).learning_rate == 5e-3


def test_method_defaults_differ_where_the_methods_need_it() -> None:
    rates = {m: c.LEARNING_RATE for m, c in METHOD_CLASSES.items()}
    # Soft prompts start from embeddings and need rates ~100x LoRA's; every rate is a valid AdamW rate.
    assert rates["prompt_tuning"] > rates["ia3"] > rates["lora"]
    assert all(0 < lr < 1 for lr in rates.values())


def test_sweep_without_learning_rates_gives_each_trial_its_own() -> None:
    grid = SweepGrid(methods=["lora", "prompt_tuning"], ranks=[4], learning_rates=[], metric="val_loss")
    trials = plan(params({"method": "lora"}), grid)
    assert [(t.method, t.learning_rate) for t in trials] == [
        ("lora", METHOD_CLASSES["lora"].LEARNING_RATE),
        ("prompt_tuning", METHOD_CLASSES["prompt_tuning"].LEARNING_RATE),
    ]
    assert trials[1].name == f"r4-prompt_tuning-lr{METHOD_CLASSES['prompt_tuning'].LEARNING_RATE:g}"
    # A recipe that sets its rate keeps it for every trial.
    fixed = plan(params({"method": "lora"}, learning_rate=7e-3), grid)
    assert {t.learning_rate for t in fixed} == {7e-3}
    assert {t.params.learning_rate for t in fixed} == {7e-3}


def test_prefix_tuning_with_gradient_checkpointing_is_refused_before_the_run() -> None:
    with pytest.raises(ValueError, match=r"train\.gradient_checkpointing does not work with.*prefix_tuning"):
        params({"method": "prefix_tuning"}, gradient_checkpointing=True)
    assert params({"method": "prompt_tuning"}, gradient_checkpointing=True).train.gradient_checkpointing


def test_compare_labels_the_method_and_variant() -> None:
    assert _method_label({"peft.method": "lora", "peft.use_dora": "True"}) == "lora+dora"
    assert _method_label({"peft.method": "prefix_tuning"}) == "prefix_tuning"
