"""How a prompt-learning adapter's virtual tokens enter a forward pass and `generate`, per task.

For an encoder that injects "embeddings" (prompt tuning, P-tuning), with `n` virtual tokens:

| task | rewritten inputs |
|---|---|
| causal LM | `inputs_embeds = [prompts, embed(input_ids)]`, mask `[1ⁿ, mask]`, labels `[-100ⁿ, labels]` |
| seq2seq LM | the ENCODER's `inputs_embeds` and mask as above (first `n` prompt rows); decoder unchanged |
| classification, token classification, ... | as causal LM, token types `[0ⁿ, types]`; token labels padded with -100 |

For an encoder that injects a "cache" (prefix tuning): the model gets the prefix as a pre-filled
cache (`cache=` / `past_key_values=`), the attention mask `[1ⁿ, mask]` (the decoder's, for seq2seq),
and position ids shifted by `n`; inputs and labels are unchanged.

Outputs are the model's own (for "embeddings" they include the virtual positions). In `generate` the
virtual tokens are injected once, at the prefill step; the returned sequences are the model's as for
a plain model (decoder-only: the input ids followed by the new tokens).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from peftcore.prompt_learning import PromptLearningTuner
from peftcore.tuners.prompt import (
    extend_attention_mask,
    pad_labels,
    pad_token_type_ids,
    prepend_virtual_tokens,
    warn_dropped,
)

_ENCODER_TASKS = ("SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")


def cache_argument(model: nn.Module) -> str:
    """The name under which the model's forward takes a cache (`cache` since transformers 5.x)."""
    params = inspect.signature(model.forward).parameters
    return "past_key_values" if "past_key_values" in params and "cache" not in params else "cache"


def _task(tuner: PromptLearningTuner) -> str:
    task = tuner.active_config().task_type
    return str(getattr(task, "value", task))


def _batch_size(kwargs: dict[str, Any]) -> int:
    for key in ("input_ids", "inputs_embeds"):
        value = kwargs.get(key)
        if value is not None:
            return int(value.shape[0])
    raise ValueError(
        "pass input_ids or inputs_embeds: prompt learning needs the batch to prepend the prompt to"
    )


def forward(tuner: PromptLearningTuner, kwargs: dict[str, Any]) -> Any:
    """The base model's forward with the active adapter's virtual tokens injected (see the table above)."""
    model = tuner.model
    if tuner.disabled:
        return model(**kwargs)
    config = tuner.active_config()
    encoder = tuner.active_encoder()
    n = config.num_virtual_tokens or 0
    task = _task(tuner)
    batch = _batch_size(kwargs)
    kwargs = dict(kwargs)
    if encoder.injects == "cache":
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = kwargs["position_ids"] + n
        mask_key = "decoder_attention_mask" if task == "SEQ_2_SEQ_LM" else "attention_mask"
        kwargs[mask_key] = extend_attention_mask(kwargs.get(mask_key), n)
        if task not in _ENCODER_TASKS:
            _drop(kwargs, "token_type_ids")
        kwargs[cache_argument(model)] = encoder.build_cache(batch, model)
        return model(**kwargs)
    if kwargs.get("position_ids") is not None:
        _drop(kwargs, "position_ids")
    embeddings = _word_embeddings(tuner)
    inputs_embeds = kwargs.pop("inputs_embeds", None)
    input_ids = kwargs.pop("input_ids", None)
    if inputs_embeds is None:
        inputs_embeds = embeddings(input_ids)
    prompts = encoder.batch_prompts(batch)[:, :n]
    kwargs["inputs_embeds"] = prepend_virtual_tokens(inputs_embeds, prompts)
    kwargs["attention_mask"] = extend_attention_mask(kwargs.get("attention_mask"), n)
    if task == "CAUSAL_LM":
        kwargs["labels"] = pad_labels(kwargs.get("labels"), n)
        _drop(kwargs, "token_type_ids")
    elif task == "SEQ_2_SEQ_LM":
        _drop(kwargs, "token_type_ids")
    else:
        kwargs["token_type_ids"] = pad_token_type_ids(kwargs.get("token_type_ids"), n)
        if task == "TOKEN_CLS":
            kwargs["labels"] = pad_labels(kwargs.get("labels"), n)
    return model(**{k: v for k, v in kwargs.items() if v is not None})


def _drop(kwargs: dict[str, Any], key: str) -> None:
    if kwargs.get(key) is not None:
        warn_dropped(key)
    kwargs.pop(key, None)


def _word_embeddings(tuner: PromptLearningTuner) -> Any:
    if tuner.word_embeddings is None:
        raise ValueError(
            "the base model has no input embeddings (get_input_embeddings() returned nothing), so virtual "
            "tokens cannot be placed before its inputs; use a transformers model with an embedding layer"
        )
    return tuner.word_embeddings


# -- generate ----------------------------------------------------------------------------------------
def generate(tuner: PromptLearningTuner, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`generate` with the active adapter's virtual tokens; input ids are required."""
    model: Any = tuner.model
    if tuner.disabled:
        return model.generate(*args, **kwargs)
    kwargs = dict(kwargs)
    if args:
        kwargs.setdefault("input_ids", args[0])
    input_ids = kwargs.get("input_ids")
    if input_ids is None:
        raise ValueError(
            "generate() with a prompt-learning adapter needs input_ids=...: the virtual tokens are placed "
            "before the embeddings of the input ids (inputs_embeds alone cannot be extended); pass the token ids"
        )
    config = tuner.active_config()
    encoder = tuner.active_encoder()
    n = config.num_virtual_tokens or 0
    task = _task(tuner)
    batch = int(input_ids.shape[0])
    if kwargs.get("attention_mask") is None:
        kwargs["attention_mask"] = torch.ones_like(input_ids)
    if task == "SEQ_2_SEQ_LM":
        if encoder.injects == "cache":
            kwargs[cache_argument(model)] = encoder.build_cache(batch, model)
            return model.generate(**kwargs)
        if kwargs.pop("encoder_outputs", None) is not None:
            warnings.warn(
                "encoder_outputs are recomputed with the virtual tokens; ignoring them", stacklevel=3
            )
        ids = kwargs.pop("input_ids")
        prompts = encoder.batch_prompts(batch)[:, :n]
        kwargs["inputs_embeds"] = prepend_virtual_tokens(_word_embeddings(tuner)(ids), prompts)
        kwargs["attention_mask"] = extend_attention_mask(kwargs["attention_mask"], n)
        return model.generate(**kwargs)
    kwargs["attention_mask"] = extend_attention_mask(kwargs["attention_mask"], n)
    if encoder.injects == "cache":
        kwargs[cache_argument(model)] = encoder.build_cache(batch, model)
        return model.generate(**kwargs)
    with _prompts_at_prefill(tuner, batch, kwargs["attention_mask"]):
        return model.generate(**kwargs)


@contextlib.contextmanager
def _prompts_at_prefill(tuner: PromptLearningTuner, batch: int, full_mask: torch.Tensor) -> Iterator[None]:
    """Within the block, the model's first generation step sees `[prompts, embed(input_ids)]`.

    `generate` is given the attention mask with the virtual tokens' ones in front, so it derives
    position ids and extends the mask for every new token as if the prompt were part of the input; at
    the prefill step the input ids are swapped for their embeddings with the prompts in front.
    """
    model: Any = tuner.model
    original = model.prepare_inputs_for_generation
    n = tuner.active_config().num_virtual_tokens or 0

    def prepare(*args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = original(*args, **kwargs)
        cache = inputs.get("cache", inputs.get("past_key_values"))
        prefill = cache is None or not cache.get_seq_length()
        if prefill and inputs.get("input_ids") is not None:
            embeds = _word_embeddings(tuner)(inputs.pop("input_ids"))
            prompts = tuner.active_encoder().batch_prompts(batch)[:, :n]
            inputs["input_ids"] = None
            inputs["inputs_embeds"] = prepend_virtual_tokens(embeds, prompts)
            if inputs.get("position_ids") is not None:
                positions = full_mask.long().cumsum(-1) - 1
                inputs["position_ids"] = positions.masked_fill(full_mask == 0, 0).to(inputs["position_ids"])
        return inputs

    model.prepare_inputs_for_generation = prepare
    try:
        yield
    finally:
        del model.prepare_inputs_for_generation
        if model.prepare_inputs_for_generation != original:  # it was an instance attribute before
            model.prepare_inputs_for_generation = original
