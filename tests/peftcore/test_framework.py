"""The framework methods plug into: one registration point, shared modules that name no method, the
adapter-layer bases, and the prompt-learning base."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import peftcore
from peftcore import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peftcore.mapping import PEFT_METHODS, register_peft_method
from peftcore.tuners.base import BaseTuner
from peftcore.tuners.base_layer import BaseTunerLayer
from peftcore.tuners.lora import LoraConfig, LoraLayer, LoraModel
from peftcore.tuners.prompt import (
    BasePromptEncoder,
    PromptLearningConfig,
    extend_attention_mask,
    pad_labels,
    prepend_virtual_tokens,
)

ROOT = Path(peftcore.__file__).parent
SHARED = (
    "serialization.py",
    "injection.py",
    "mapping.py",
    "tuners/base.py",
    "tuners/base_layer.py",
    "tuners/injector.py",
)


def test_one_registration_fills_every_view() -> None:
    method = PEFT_METHODS["LORA"]
    assert (method.config_cls, method.model_cls, method.prefix) == (LoraConfig, LoraModel, "lora_")
    assert PEFT_TYPE_TO_CONFIG_MAPPING["LORA"] is LoraConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING["LORA"] is LoraModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING["LORA"] == "lora_"
    register_peft_method(
        name="lora", config_cls=LoraConfig, model_cls=LoraModel, prefix="lora_"
    )  # idempotent
    with pytest.raises(ValueError, match="already registered"):
        register_peft_method(name="lora", config_cls=LoraConfig, model_cls=LoraModel, prefix="other_")
    with pytest.raises(ValueError, match="name='nope' is not a PeftType"):
        register_peft_method(name="nope", config_cls=LoraConfig, model_cls=LoraModel)


def _code_words(path: Path) -> list[str]:
    """Identifiers and string literals of a module's code (docstrings and comments left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.append(node.id)
        elif isinstance(node, ast.Attribute):
            words.append(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            words.append(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.append(node.value)
    return words


@pytest.mark.parametrize("relative", SHARED)
def test_shared_modules_name_no_method(relative: str) -> None:
    """Method code never leaks into the shared modules: a method name there means a missing abstraction."""
    words = _code_words(ROOT / relative)
    assert len(words) > 50, "the scan sees the code"
    leaks = [w for w in words if re.search(r"lora|dora|ia3|prompt_tuning", w, re.IGNORECASE)]
    assert not leaks, f"{relative}: {leaks}"


def test_lora_is_built_on_the_shared_bases() -> None:
    assert issubclass(LoraModel, BaseTuner) and issubclass(LoraLayer, BaseTunerLayer)
    assert not issubclass(LoraLayer, nn.Module), (
        "a plain base: custom layers are `class X(nn.Module, LoraLayer)`"
    )


def test_a_custom_layer_written_for_hf_peft_plugs_in() -> None:
    """HF PEFT's documented extension point: `config._register_custom_module({ModuleType: LayerClass})`."""

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    class ScaleLora(nn.Module, LoraLayer):
        def __init__(self, base_layer: nn.Module, adapter_name: str, **kwargs: object) -> None:
            super().__init__()
            LoraLayer.__init__(self, base_layer, **kwargs)
            self._active_adapter = adapter_name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base_layer(x)

    model = nn.Sequential(Scale(), nn.Linear(4, 2))
    config = LoraConfig(target_modules=["0", "1"])
    config._register_custom_module({Scale: ScaleLora})
    with pytest.warns(UserWarning, match="Unsupported layer type"):
        pm = peftcore.get_peft_model(model, config)
    assert isinstance(pm.get_base_model()[0], ScaleLora)
    assert isinstance(pm.get_base_model()[1], LoraLayer)


# -- prompt-learning base -------------------------------------------------------------------------
class Tokens(BasePromptEncoder):
    """The simplest encoder: a table of virtual-token vectors (what prompt tuning will be)."""

    def __init__(self, config: PromptLearningConfig) -> None:
        super().__init__(config)
        self.embedding = nn.Embedding(config.total_virtual_tokens, config.token_dim or 0)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding(indices)


class _Config(PromptLearningConfig):
    PEFT_TYPE = peftcore.PeftType.PROMPT_TUNING


def test_prompt_config_reads_dimensions_from_the_model_config() -> None:
    import transformers as tf

    config = _Config(num_virtual_tokens=3, task_type="SEQ_2_SEQ_LM")
    assert config.is_prompt_learning
    config.fill_from_model_config(tf.T5Config(d_model=16, num_layers=2, num_heads=4))
    assert (config.token_dim, config.num_layers, config.num_attention_heads) == (16, 2, 4)
    assert config.num_transformer_submodules == 2 and config.total_virtual_tokens == 6
    with pytest.raises(ValueError, match="num_virtual_tokens=0 must be a positive integer"):
        _Config(num_virtual_tokens=0)


def test_virtual_tokens_are_prepended_masked_in_and_ignored_by_the_loss() -> None:
    config = _Config(num_virtual_tokens=2, token_dim=4, num_transformer_submodules=1)
    encoder = Tokens(config)
    embeds = torch.randn(3, 5, 4)
    prompts = encoder.batch_prompts(3)
    combined = prepend_virtual_tokens(embeds, prompts)
    assert combined.shape == (3, 7, 4)
    torch.testing.assert_close(combined[:, :2], encoder.embedding.weight.expand(3, 2, 4))
    torch.testing.assert_close(combined[:, 2:], embeds)
    mask = extend_attention_mask(torch.tensor([[1, 1, 0]]), 2)
    assert mask is not None and mask.tolist() == [[1, 1, 1, 1, 0]]
    labels = pad_labels(torch.tensor([[5, 6]]), 2)
    assert labels is not None and labels.tolist() == [[-100, -100, 5, 6]]
    saved = encoder.prompt_embeddings()
    assert saved.shape == (2, 4) and not saved.requires_grad
    with pytest.raises(ValueError, match="do not fit inputs_embeds"):
        prepend_virtual_tokens(embeds, encoder.batch_prompts(2))
