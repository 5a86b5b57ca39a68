"""`ensure_weight_tying`: keep LoRA adapters tied where the base model ties its embeddings.

Many language models share one matrix between the input embedding and the output head (and, for
encoder-decoders, the encoder's and decoder's embeddings). Adapting only one side would untie them.
With `ensure_weight_tying=True` and an embedding (or the head) in `modules_to_save` or
`target_modules`, every tied module is adapted, and the adapters are tied too:

- modules_to_save: the copies of the tied modules share the embedding copy's parameters;
- target_modules: a tied head's LoRA uses the embedding's factors, `A_head = B_embᵀ`, `B_head = A_embᵀ`
  (same storage), so `ΔW_head = (B_emb A_emb)ᵀ = ΔW_emb`; tied embeddings share the very parameters.
  The tied base weight is merged once, by the embedding's layer.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, cast

from torch import nn

from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.injection import logical_modules
from peftcore.tuners.base_layer import BaseTunerLayer
from peftcore.tuners.lora.config import LoraConfig

EMBEDDING_NAMES = ("embed_tokens", "lm_head")
_NOT_TIED_WARNING = (
    "Model has `tie_word_embeddings=True` and a tied layer is part of the adapter, but `ensure_weight_tying` is "
    "not set to True. This can lead to complications, for example when merging the adapter or converting your "
    "model to formats other than safetensors. Set ensure_weight_tying=True to keep the adapters tied."
)


def _unwrapped(module: nn.Module) -> nn.Module:
    while isinstance(module, BaseTunerLayer | AuxiliaryTrainingWrapper):
        module = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module.original_module
    return module


def tied_module_names(model: nn.Module) -> tuple[str | None, list[str]]:
    """(name of the input embedding, names of the modules tied to it) when the model's config ties them."""
    config: Any = getattr(model, "config", None)
    data = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    get_in = getattr(model, "get_input_embeddings", None)
    if not data.get("tie_word_embeddings") or not callable(get_in) or get_in() is None:
        return None, []
    weight = getattr(_unwrapped(get_in()), "weight", None)
    embedding_name, tied = None, []
    for name, module in logical_modules(model):
        if module is get_in():
            embedding_name = name
        elif name and weight is not None and getattr(_unwrapped(module), "weight", None) is weight:
            tied.append(name)
    return embedding_name, tied


def plan_tying(config: LoraConfig, model: nn.Module) -> list[str]:
    """Extend `config` so every tied module is adapted; returns the extra target names (may be none)."""
    saved = config.modules_to_save or []
    to_save = any(m.split(".")[-1] in EMBEDDING_NAMES for m in saved)
    targets = config.target_modules
    if isinstance(targets, str):
        in_target = any(re.fullmatch(targets, name) for name in EMBEDDING_NAMES)
    else:
        in_target = any(t.split(".")[-1] in EMBEDDING_NAMES for t in targets or [])
    embedding, tied = tied_module_names(model)
    if not config.ensure_weight_tying:
        if (to_save or in_target) and tied:
            warnings.warn(_NOT_TIED_WARNING, stacklevel=6)
        return []
    if not tied or embedding is None:
        warnings.warn(
            "You have requested `ensure_weight_tying`, but no tied modules were found in the model (its config "
            "does not tie the word embeddings, or nothing shares the embedding's weight)",
            stacklevel=6,
        )
        return []
    group = [embedding, *tied]
    if to_save:
        config.modules_to_save = list(dict.fromkeys([*saved, *group]))
        return []
    if in_target:
        return group
    warnings.warn(
        "You have requested `ensure_weight_tying`, but no tied modules are added in either `modules_to_save` or "
        "`target_modules`",
        stacklevel=6,
    )
    return []


def tie_adapters(config: LoraConfig, adapter_name: str, model: nn.Module) -> None:
    """After injection: make the tied modules' adapters share the embedding's tensors."""
    if not config.ensure_weight_tying:
        return
    embedding_name, tied = tied_module_names(model)
    if embedding_name is None or not tied:
        return
    source = model.get_submodule(embedding_name)
    for name in tied:
        module = model.get_submodule(name)
        if isinstance(source, AuxiliaryTrainingWrapper) and isinstance(module, AuxiliaryTrainingWrapper):
            _share_copies(source, module, adapter_name)
        elif isinstance(source, BaseTunerLayer) and isinstance(module, BaseTunerLayer):
            _share_factors(cast(Any, source), cast(Any, module), adapter_name)


def _share_copies(source: Any, module: Any, adapter_name: str) -> None:
    held = getattr(source, "modules_to_save", {})
    if adapter_name not in held or adapter_name not in getattr(module, "modules_to_save", {}):
        return
    for pname, param in held[adapter_name].named_parameters(recurse=False):
        setattr(module.modules_to_save[adapter_name], pname, param)


def _share_factors(source: Any, layer: Any, adapter_name: str) -> None:
    if adapter_name not in source.lora_embedding_A:
        return
    emb_a, emb_b = source.lora_embedding_A[adapter_name], source.lora_embedding_B[adapter_name]
    if adapter_name in layer.lora_embedding_A:  # another embedding tied to the input embedding
        layer.lora_embedding_A[adapter_name] = emb_a
        layer.lora_embedding_B[adapter_name] = emb_b
    elif adapter_name in layer.lora_A:  # a head: ΔW_head = (B_emb A_emb)ᵀ through transposed views
        layer.lora_A[adapter_name].weight = nn.Parameter(emb_b.t(), requires_grad=emb_b.requires_grad)
        layer.lora_B[adapter_name].weight = nn.Parameter(emb_a.t(), requires_grad=emb_a.requires_grad)
    else:
        return
    layer._tied_lora_source = [source]  # in a list: not registered as a submodule
