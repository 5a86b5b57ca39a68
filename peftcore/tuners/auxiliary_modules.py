"""Auxiliary modules of an adapter: modules trained in full (`modules_to_save`) and trainable embedding
rows (`trainable_token_indices`). Which modules they are, whether they can be wrapped, wrapping them,
and what unloading them means for tied embeddings. Shared by every adapter-layer method.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.config import PeftConfig
from peftcore.injection import logical_modules, name_matches, replace_module, sample_module_names
from peftcore.tuners.base_layer import BaseTunerLayer


def check_targets(config: PeftConfig, adapter_name: str, model: nn.Module, saved_modules: list[str]) -> None:
    """Refuse modules_to_save entries that would wrap an adapter layer or a container, and unusable
    trainable-token targets."""
    from peftcore.modules_to_save import check_wrappable

    _check_not_inside_adapter_layers(model, saved_modules, adapter_name)
    for name, module in logical_modules(model):
        if name and name_matches(name, saved_modules):
            if isinstance(module, BaseTunerLayer):
                raise ValueError(
                    f"modules_to_save entry matches {name!r}, which is already adapted by {type(module).__name__}; "
                    "a module cannot be both adapted and trained in full. Remove it from modules_to_save or from "
                    "the other adapter's target_modules"
                )
            if not isinstance(module, AuxiliaryTrainingWrapper):
                check_wrappable(module)
    token_targets(config, model, adapter_name)


def token_targets(
    config: PeftConfig, model: nn.Module, adapter_name: str = ""
) -> list[tuple[str, list[int], bool]]:
    """(module name, token ids, tied to the embedding?) for `trainable_token_indices`; raises if unusable.

    A list of ids means the input embedding (and the output head when it shares its weight).
    """
    from peftcore.trainable_tokens import TrainableTokensWrapper

    spec = getattr(config, "trainable_token_indices", None)
    if not spec:
        return []
    modules = dict(logical_modules(model))
    if isinstance(spec, dict):
        found = [
            (name, list(ids))
            for key, ids in spec.items()
            for name in modules
            if name and name_matches(name, [key])
        ]
        missing = [key for key in spec if not any(name_matches(n, [key]) for n, _ in found)]
        if missing:
            _check_not_inside_adapter_layers(
                model, missing, adapter_name, TrainableTokensWrapper, "trainable_token_indices"
            )
            if adapter_name and any(name_matches(f"layer.{adapter_name}", [key]) for key in missing):
                raise ValueError(
                    f"trainable_token_indices names {missing}, which matches only the adapter's own name "
                    f"'{adapter_name}' (the per-adapter entries inside its adapter layers). Please ensure that "
                    "the adapter name does not conflict with any of the targeted modules: name the embedding "
                    f"module in trainable_token_indices (e.g. {sample_module_names(model)})"
                )
            raise ValueError(
                f"Target modules {missing} not found in the base model: trainable_token_indices names modules "
                f"that do not exist. Some of its module names: {sample_module_names(model)}"
            )
        targets = [(name, ids, False) for name, ids in found]
    else:
        get_in = getattr(model, "get_input_embeddings", None)
        embedding = get_in() if callable(get_in) else None
        names = [name for name, m in modules.items() if m is embedding and name]
        if not names:
            raise ValueError(
                "trainable_token_indices given as a list needs a model with get_input_embeddings(); pass "
                "{embedding_module_name: [token ids]} instead"
            )
        targets = [(names[0], list(spec), False)]
        head = _tied_head(model, embedding)
        if head is not None:
            targets += [(name, list(spec), True) for name, m in modules.items() if m is head and name]
    for name, _, _ in targets:
        module = modules[name]
        if isinstance(module, BaseTunerLayer) or not (
            isinstance(module, TrainableTokensWrapper | nn.Embedding | nn.Linear)
        ):
            raise TypeError(
                f"trainable_token_indices cannot be applied to modules of type {type(module)} ({name!r}): they "
                "train rows of an nn.Embedding that is not otherwise adapted. Remove it from target_modules"
            )
    return targets


def add(config: PeftConfig, adapter_name: str, model: nn.Module, saved_modules: list[str]) -> None:
    """Wrap (or extend) every module matching `saved_modules` in a ModulesToSaveWrapper, then the
    trainable tokens."""
    from peftcore.modules_to_save import ModulesToSaveWrapper

    # Checked again now that this adapter's own layers exist (an entry may name one of their parts).
    _check_not_inside_adapter_layers(model, saved_modules, adapter_name)
    wrapped = []
    for name, module in list(logical_modules(model)):
        if not name or not name_matches(name, saved_modules):
            continue
        if isinstance(module, ModulesToSaveWrapper):
            module.update(adapter_name)
        else:
            replace_module(model, name, ModulesToSaveWrapper(module, adapter_name))
        wrapped.append(name)
    if wrapped and hasattr(config, "modules_to_save"):
        config.modules_to_save = saved_modules
    _add_trainable_tokens(config, adapter_name, model)


def _add_trainable_tokens(config: PeftConfig, adapter_name: str, model: nn.Module) -> None:
    from peftcore.trainable_tokens import TrainableTokensWrapper

    embedding_layer = None
    for name, ids, tied in sorted(token_targets(config, model, adapter_name), key=lambda t: t[2]):
        module = model.get_submodule(name)
        if isinstance(module, TrainableTokensWrapper):
            module.update(adapter_name, token_indices=ids)
            if not tied:
                embedding_layer = module.token_adapter
            continue
        wrapper = TrainableTokensWrapper(
            module, adapter_name, ids, tied_adapter=embedding_layer if tied else None
        )
        replace_module(model, name, wrapper)
        if not tied:
            embedding_layer = wrapper.token_adapter


def _tied_head(model: nn.Module, embedding: nn.Module | None) -> nn.Module | None:
    """The output head that shares the input embedding's weight, if the model ties them."""
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    if head is None or embedding is None:
        return None

    def weight_of(module: nn.Module) -> Any:
        inner = module.original_module if isinstance(module, AuxiliaryTrainingWrapper) else module
        return (
            inner.get_base_layer().weight
            if isinstance(inner, BaseTunerLayer)
            else getattr(inner, "weight", None)
        )

    emb_weight = weight_of(embedding)
    return head if emb_weight is not None and weight_of(head) is emb_weight else None


def _check_not_inside_adapter_layers(
    model: nn.Module,
    names: list[str],
    adapter_name: str,
    wrapper_cls: type | None = None,
    option: str = "modules_to_save",
) -> None:
    """Raise if an entry of `names` (for `option`, wrapped with `wrapper_cls`) only matches a module
    inside an adapter layer or wrapper: typically an adapter name equal to a module name."""
    from peftcore.modules_to_save import ModulesToSaveWrapper
    from peftcore.tuners.injector import targets_wrapped_module

    inside = targets_wrapped_module(model, names)
    if inside:
        owner = _owning_wrapper(model, inside[0])
        raise ValueError(
            f"You are trying to target a module with {wrapper_cls or ModulesToSaveWrapper} that is a child of "
            f"{type(owner)}. This is almost certainly not the intended behavior. Please ensure that the adapter "
            f"name, '{adapter_name}', does not conflict with any of the targeted modules ({inside[0]!r} "
            f"matches {option}={names})."
        )


def _owning_wrapper(model: nn.Module, name: str) -> nn.Module:
    """The outermost adapter layer or wrapper that contains module `name`."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        module = model.get_submodule(".".join(parts[:i]))
        if isinstance(module, BaseTunerLayer | AuxiliaryTrainingWrapper):
            return module
    return model.get_submodule(name)


def record_untied_embeddings(model: nn.Module) -> None:
    """A trained copy of a tied head or embedding (modules_to_save) unties it: say so in the config, so
    a saved merged model is not re-tied to the other side's weights on reload."""
    config = getattr(model, "config", None)
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if config is None or not getattr(config, "tie_word_embeddings", False):
        return
    if not callable(get_in) or not callable(get_out):
        return
    emb_in, emb_out = get_in(), get_out()
    if emb_in is not None and emb_out is not None and emb_in.weight is not emb_out.weight:
        warnings.warn(
            "the merged model's input and output embeddings are no longer tied (one of them was trained in "
            "full); setting config.tie_word_embeddings=False",
            stacklevel=4,
        )
        config.tie_word_embeddings = False
