"""Preparing a quantized (k-bit) base for training: `prepare_model_for_kbit_training`, as HF PEFT names it.

A base loaded in 4 or 8 bits keeps its small float parameters (layer norms, embeddings, the head) in
the load dtype, often float16 / bfloat16. Training through them in half precision loses the small
gradients that reach the adapters, so they are cast to float32; the whole base is frozen; and with
gradient checkpointing, the input embeddings' output is made to require grad so that checkpointed
blocks of a frozen model still backpropagate into the adapters inside them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Quantization methods whose own float parameters (scales, zero points) must stay in their dtype.
_KEEP_DTYPE_METHODS = ("gptq", "aqlm", "eetq", "torchao", "hqq")


def prepare_model_for_kbit_training(
    model: nn.Module,
    use_gradient_checkpointing: bool = True,
    gradient_checkpointing_kwargs: dict[str, Any] | None = None,
    auto_clear_cache: bool = True,
) -> nn.Module:
    """Freeze `model`, upcast its half-precision float parameters to float32 (not 4-bit weights), and
    turn on gradient checkpointing (`use_gradient_checkpointing`) in a way that reaches the adapters.

    Returns `model` (changed in place). Call it on the base, before `get_peft_model`.
    """
    method = str(getattr(model, "quantization_method", "") or "").lower()
    if getattr(model, "hqq_quantized", False):
        method = "hqq"
    quantized = bool(
        getattr(model, "is_loaded_in_8bit", False)
        or getattr(model, "is_loaded_in_4bit", False)
        or method in _KEEP_DTYPE_METHODS
    )
    kwargs = dict(gradient_checkpointing_kwargs or {})
    for param in model.parameters():
        param.requires_grad_(False)
    if method not in _KEEP_DTYPE_METHODS:
        for param in model.parameters():
            # Params4bit stores packed 4-bit codes in a float dtype on some setups: never cast those.
            if param.dtype in (torch.float16, torch.bfloat16) and type(param).__name__ != "Params4bit":
                param.data = param.data.to(torch.float32)
        if auto_clear_cache and torch.cuda.is_available():
            torch.cuda.empty_cache()
    if quantized and use_gradient_checkpointing:
        if kwargs.get("use_reentrant", True):
            # Reentrant checkpointing backpropagates only into blocks whose inputs require grad.
            enable = getattr(model, "enable_input_require_grads", None)
            if callable(enable):
                enable()
            else:
                embeddings: Any = model.get_input_embeddings()  # type: ignore[operator]
                embeddings.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True))
        if callable(getattr(model, "activation_checkpointing_enable", None)):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)  # type: ignore[operator]
        elif callable(getattr(model, "gradient_checkpointing_enable", None)):  # transformers 5.0
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # type: ignore[operator]
    return model
