"""LoraConfig / PeftConfig: round trips through adapter_config.json, JSON shapes, dispatch, validation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from peftcore import LoraConfig, PeftConfig, PeftType, TaskType, get_peft_model
from tests import tiny


def _full_config() -> LoraConfig:
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=4,
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules={"v_proj", "q_proj", "k_proj"},
        exclude_modules=["k_proj"],
        bias="lora_only",
        use_rslora=True,
        modules_to_save=["lm_head"],
        init_lora_weights="gaussian",
        layers_to_transform=[0, 1],
        layers_pattern="layers",
        rank_pattern={"q_proj": 2},
        alpha_pattern={"v_proj": 8.0},
        use_dora=True,
        base_model_name_or_path="org/model",
        revision="main",
    )


def test_defaults_match_hf_peft_lora() -> None:
    data = LoraConfig().to_dict()
    expected = {
        "peft_type": "LORA",
        "task_type": None,
        "r": 8,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": None,
        "exclude_modules": None,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": False,
        "inference_mode": False,
        "base_model_name_or_path": None,
        "revision": None,
    }
    assert {k: data[k] for k in expected} == expected
    # The HF PEFT format version the file follows, as a plain version string (HF PEFT parses it).
    assert data["peft_version"] == "0.21.2"


def test_to_dict_enums_as_strings_and_sets_as_sorted_lists() -> None:
    config = _full_config()
    data = config.to_dict()
    assert data["peft_type"] == "LORA" and type(data["peft_type"]) is str
    assert data["task_type"] == "CAUSAL_LM" and type(data["task_type"]) is str
    assert data["target_modules"] == ["k_proj", "q_proj", "v_proj"]
    assert data["exclude_modules"] == ["k_proj"]
    assert json.loads(json.dumps(data)) == data, "plain JSON types only"
    assert config.target_modules == {"k_proj", "q_proj", "v_proj"}, "to_dict must not mutate the config"
    assert isinstance(config.task_type, TaskType) and config.peft_type is PeftType.LORA


def test_enum_and_string_inputs_are_equivalent() -> None:
    assert LoraConfig(task_type="SEQ_CLS") == LoraConfig(task_type=TaskType.SEQ_CLS)
    assert LoraConfig(task_type="SEQ_CLS").task_type is TaskType.SEQ_CLS
    assert TaskType.SEQ_2_SEQ_LM == "SEQ_2_SEQ_LM" and PeftType.LORA == "LORA"
    assert LoraConfig(peft_type="LORA") == LoraConfig(peft_type=PeftType.LORA)


def test_save_pretrained_writes_sorted_indented_json(tmp_path: Path) -> None:
    config = _full_config()
    config.save_pretrained(tmp_path)
    text = (tmp_path / "adapter_config.json").read_text()
    assert text.rstrip("\n") == json.dumps(config.to_dict(), indent=2, sort_keys=True)
    keys = [line.split('"')[1] for line in text.splitlines() if line.startswith('  "')]
    assert keys == sorted(keys)
    assert json.loads(text)["inference_mode"] is False, "PeftConfig.save_pretrained writes the value as is"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter_config.json"], "no temp files left"


def test_round_trip_through_file(tmp_path: Path) -> None:
    config = _full_config()
    config.save_pretrained(tmp_path)
    loaded = LoraConfig.from_pretrained(tmp_path)
    assert type(loaded) is LoraConfig
    assert loaded == config
    assert loaded.target_modules == {"k_proj", "q_proj", "v_proj"}, "a list on disk is a set in memory"
    assert loaded.to_dict() == config.to_dict()
    assert loaded.peft_version == config.peft_version


def test_regex_target_and_int_layer_survive_round_trip(tmp_path: Path) -> None:
    config = LoraConfig(target_modules=r".*\.(q|v)_proj", init_lora_weights=False)
    config.save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert loaded.target_modules == r".*\.(q|v)_proj"  # type: ignore[attr-defined]
    assert loaded.init_lora_weights is False  # type: ignore[attr-defined]
    config = LoraConfig(target_modules=["q_proj"], layers_to_transform=1, layers_pattern=["layers", "h"])
    assert LoraConfig.from_dict(json.loads(config.to_json_string())) == config


def test_peft_config_dispatches_on_peft_type(tmp_path: Path) -> None:
    _full_config().save_pretrained(tmp_path / "sub")
    loaded = PeftConfig.from_pretrained(tmp_path, subfolder="sub")
    assert type(loaded) is LoraConfig
    assert PeftConfig.from_dict({"peft_type": "LORA", "r": 2}) == LoraConfig(r=2)
    assert type(PeftConfig.from_dict({"peft_type": PeftType.LORA})) is LoraConfig


def test_from_pretrained_kwargs_override_file(tmp_path: Path) -> None:
    _full_config().save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(tmp_path, inference_mode=True, r=16)
    assert loaded.inference_mode is True and loaded.r == 16  # type: ignore[attr-defined]


def test_config_dict_without_peft_type_is_not_an_adapter_config() -> None:
    """As in HF PEFT: any JSON without `peft_type` is refused, whichever class loads it (a TypeError)."""
    for cls in (LoraConfig, PeftConfig):
        with pytest.raises(TypeError, match=r"missing required keys: \{'peft_type'\}.*\"LORA\""):
            cls.from_dict({"r": 4})


def test_peft_type_comes_from_the_class_and_unknown_types_are_refused() -> None:
    assert LoraConfig(peft_type="IA3").peft_type is PeftType.LORA  # HF PEFT's loaders pass it along
    with pytest.raises(ValueError, match=r"peft_type='NOPE' is not supported by peftcore; supported: .*LORA"):
        PeftConfig.from_dict({"peft_type": "NOPE"})


def test_validation_messages_name_parameter_value_and_fix() -> None:
    cases = [
        ({"r": 0}, r"r=0 must be a positive integer \(the LoRA rank\), e\.g\. r=8"),
        ({"lora_dropout": 1.0}, r"lora_dropout=1\.0 must be in \[0, 1\); use 0\.0 to disable dropout"),
        ({"lora_alpha": "big"}, r"lora_alpha='big' must be a finite number, e\.g\. lora_alpha=16"),
        ({"task_type": "CLS"}, r"Invalid task type: 'CLS'. Must be one of .*SEQ_CLS.*or None"),
        (
            {"target_modules": ".*q", "layers_to_transform": [0]},
            r"`layers_to_transform` cannot be used when `target_modules` is a str. Encode the layer indices",
        ),
        ({"target_modules": 3}, r"target_modules=3 must be a list of module names, a regex string, or None"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises((ValueError, TypeError), match=pattern):
            LoraConfig(**kwargs)


def test_broken_files(tmp_path: Path) -> None:
    path = tmp_path / "adapter_config.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"must hold a JSON object, got list"):
        PeftConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"is a file; pass a directory"):
        LoraConfig().save_pretrained(path)


def test_get_peft_model_keeps_the_callers_config_resolved_in_place() -> None:
    """As in HF PEFT: the model holds the very config object it was given, with the defaults resolved."""
    config = LoraConfig(task_type="CAUSAL_LM")
    peft_model = get_peft_model(tiny.build("llama"), config)
    stored = peft_model.peft_config["default"]
    assert stored is config
    assert stored.target_modules == {"q_proj", "v_proj"}
    assert stored.to_dict()["target_modules"] == ["q_proj", "v_proj"]


# -- interoperability with HF PEFT's config files ---------------------------------------------------
def test_hf_peft_written_config_loads_without_warnings(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    hf = peft.LoraConfig(
        task_type="SEQ_2_SEQ_LM",
        r=4,
        lora_alpha=32,
        lora_dropout=0.1,
        target_modules=["q", "v"],
        use_rslora=True,
        rank_pattern={"q": 2},
        base_model_name_or_path="bigscience/mt0-large",
    )
    hf.save_pretrained(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key HF PEFT writes by default is known to peftcore
        loaded = PeftConfig.from_pretrained(tmp_path)
    assert type(loaded) is LoraConfig
    assert (loaded.r, loaded.lora_alpha, loaded.lora_dropout) == (4, 32, 0.1)
    assert loaded.target_modules == {"q", "v"} and loaded.use_rslora and loaded.rank_pattern == {"q": 2}
    assert loaded.task_type is TaskType.SEQ_2_SEQ_LM
    assert loaded.base_model_name_or_path == "bigscience/mt0-large"


def test_peftcore_written_config_loads_in_hf_peft(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=4,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj"],
        bias="lora_only",
        use_dora=True,
        modules_to_save=["lm_head"],
        alpha_pattern={"v_proj": 8},
    )
    config.save_pretrained(tmp_path)
    hf = peft.PeftConfig.from_pretrained(str(tmp_path))
    assert type(hf) is peft.LoraConfig
    assert (hf.r, hf.lora_alpha, hf.bias, hf.use_dora) == (4, 16, "lora_only", True)
    assert set(hf.target_modules) == {"q_proj", "v_proj"} and hf.modules_to_save == ["lm_head"]
    assert hf.alpha_pattern == {"v_proj": 8} and hf.task_type == "CAUSAL_LM"
