"""Differential tests of the adapter-layer methods beside LoRA against Hugging Face `peft` (a test-only
oracle), on the tiny architectures each method supports.

Both libraries build the same method on identical fresh bases, with random (non-identity) init and
every trainable tensor then perturbed differently; each adapter is saved by one library and loaded by
the other. Trainable counts, file keys and shapes, outputs (both directions), configs, merged weights
and two-adapter files must agree.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

import peftcore
from tests import tiny
from tests.peftcore.methods import METHODS, perturb

peft = pytest.importorskip("peft")

ATOL = 1e-6
CASES = [(m, a) for m, spec in METHODS.items() for a in spec.archs]
IDS = [f"{m}-{a}" for m, a in CASES]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def logits(model: Any, arch: str) -> torch.Tensor:
    model.eval()
    return tiny.output(model, tiny.inputs(arch))


def file_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(os.path.join(directory, "adapter_model.safetensors"), "pt") as fh:
        return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118


class Pair:
    """One method × arch: a base, each library's perturbed adapter, saved to disk."""

    def __init__(self, method: str, arch: str, root: Path) -> None:
        self.spec = METHODS[method]
        self.arch = arch
        self.base = tiny.build(arch)
        self.models: dict[str, Any] = {}
        self.dirs: dict[str, Path] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # both switch fan_in_fan_out for GPT-2's Conv1D and say so
            for seed, lib in enumerate((peftcore, peft)):
                config = self.spec.config(lib, arch, **self.spec.random_init)
                model = lib.get_peft_model(self.fresh(), config)
                perturb(model, seed=seed + 1)
                self.dirs[lib.__name__] = root / lib.__name__
                model.save_pretrained(self.dirs[lib.__name__])
                self.models[lib.__name__] = model

    def fresh(self) -> Any:
        return copy.deepcopy(self.base)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache: dict[tuple[str, str], Pair] = {}

    def get(method: str, arch: str) -> Pair:
        if (method, arch) not in cache:
            cache[method, arch] = Pair(method, arch, tmp_path_factory.mktemp(f"{method}-{arch}"))
        return cache[method, arch]

    return get


@pytest.mark.parametrize(("method", "arch"), CASES, ids=IDS)
def test_trainable_counts_and_file_keys_match(pairs: Any, method: str, arch: str) -> None:
    pair = pairs(method, arch)
    pc, hf = pair.models["peftcore"], pair.models["peft"]
    assert pc.get_nb_trainable_parameters() == hf.get_nb_trainable_parameters()
    assert file_shapes(pair.dirs["peftcore"]) == file_shapes(pair.dirs["peft"])


@pytest.mark.parametrize(("method", "arch"), CASES, ids=IDS)
def test_peftcore_adapter_gives_same_outputs_in_peft(pairs: Any, method: str, arch: str) -> None:
    pair = pairs(method, arch)
    expected = logits(pair.models["peftcore"], arch)
    assert not torch.allclose(expected, logits(pair.fresh(), arch), atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = peft.PeftModel.from_pretrained(pair.fresh(), pair.dirs["peftcore"])
    torch.testing.assert_close(logits(loaded, arch), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("method", "arch"), CASES, ids=IDS)
def test_peft_adapter_gives_same_outputs_in_peftcore(pairs: Any, method: str, arch: str) -> None:
    pair = pairs(method, arch)
    expected = logits(pair.models["peft"], arch)
    assert not torch.allclose(expected, logits(pair.fresh(), arch), atol=1e-3)
    with warnings.catch_warnings():
        # Every key peft writes (config and tensors) is understood: loading warns about nothing.
        warnings.simplefilter("error")
        loaded = peftcore.PeftModel.from_pretrained(pair.fresh(), pair.dirs["peft"])
    torch.testing.assert_close(logits(loaded, arch), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("method", "arch"), CASES, ids=IDS)
def test_merge_and_unload_gives_same_weights(pairs: Any, method: str, arch: str) -> None:
    pair = pairs(method, arch)
    if not pair.spec.merges:
        pytest.skip(f"{method} does not merge")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pc = peftcore.PeftModel.from_pretrained(pair.fresh(), pair.dirs["peft"]).merge_and_unload()
        hf = peft.PeftModel.from_pretrained(pair.fresh(), pair.dirs["peft"]).merge_and_unload()
    pc_state, hf_state = pc.state_dict(), hf.state_dict()
    assert pc_state.keys() == hf_state.keys()
    for key in pc_state:
        torch.testing.assert_close(pc_state[key], hf_state[key], atol=ATOL, rtol=0, msg=key)


@pytest.mark.parametrize(("method", "arch"), CASES, ids=IDS)
def test_configs_load_in_the_other_library(pairs: Any, method: str, arch: str) -> None:
    pair = pairs(method, arch)
    hf_config = peft.PeftConfig.from_pretrained(pair.dirs["peftcore"])
    assert type(hf_config).__name__ == pair.spec.config_name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pc_config = peftcore.PeftConfig.from_pretrained(pair.dirs["peft"])
    assert type(pc_config).__name__ == pair.spec.config_name
    pc_fields, hf_fields = pc_config.to_dict(), hf_config.to_dict()
    assert set(pc_fields) <= set(hf_fields)
    for key in pc_fields.keys() - {"peft_version", "base_model_name_or_path"}:
        pc_value, hf_value = pc_fields[key], hf_fields[key]
        if isinstance(pc_value, list | set) and isinstance(hf_value, list | set):
            pc_value, hf_value = sorted(pc_value), sorted(hf_value)
        assert pc_value == hf_value, key


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("direction", ["peftcore-to-peft", "peft-to-peftcore"])
def test_two_adapters_round_trip(method: str, direction: str, tmp_path: Path) -> None:
    spec = METHODS[method]
    arch = spec.archs[0]
    writer, reader = (peftcore, peft) if direction == "peftcore-to-peft" else (peft, peftcore)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = writer.get_peft_model(tiny.build(arch), spec.config(writer, arch, **spec.random_init))
        model.add_adapter("other", spec.config(writer, arch, **spec.random_init))
        expected = {}
        for seed, name in enumerate(("default", "other")):
            model.set_adapter(name)
            perturb(model, seed=seed + 7)
            expected[name] = logits(model, arch)
        model.save_pretrained(tmp_path)
        loaded = reader.PeftModel.from_pretrained(tiny.build(arch), tmp_path)
        loaded.load_adapter(tmp_path / "other", adapter_name="other")
    assert not torch.allclose(expected["default"], expected["other"], atol=1e-3)
    for name, value in expected.items():
        loaded.set_adapter(name)
        torch.testing.assert_close(logits(loaded, arch), value, atol=ATOL, rtol=0, msg=name)
