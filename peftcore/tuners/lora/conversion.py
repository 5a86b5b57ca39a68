"""`save_pretrained(..., path_initial_model_for_weight_conversion=...)` for LoRA: a PiSSA / OLoRA
adapter (whose init moved part of the base weight into A and B) written as a plain LoRA of twice the
rank for the unmodified base; the math is in `svd_init.py`."""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

import torch

from peftcore.constants import CONFIG_NAME
from peftcore.io import atomic_write_files, text_writer
from peftcore.serialization import load_peft_weights
from peftcore.tuners.lora.svd_init import convert_to_plain_lora, doubled_alpha, is_weight_moving_init


def convert_for_initial_model(
    config: Any, tensors: dict[str, torch.Tensor], initial_path: str
) -> tuple[Any, dict[str, torch.Tensor]]:
    """(config, tensors) of the plain LoRA equivalent to the trained adapter `tensors` on the original base.

    The initial adapter's config is rewritten with `init_lora_weights=True` (as HF PEFT does), so
    loading it never re-runs the init on an already modified base.

    Raises:
        ValueError: rsLoRA with rank or alpha patterns (the doubling would change their scaling), DoRA,
            or an initial adapter that does not match.
    """
    if config.use_rslora and (config.rank_pattern or config.alpha_pattern):
        raise ValueError(
            "Passing `path_initial_model_for_weight_conversion` to `save_pretrained` is not supported when "
            "using `rank_pattern` or `alpha_pattern` at the same time as `use_rslora=True`."
        )
    if config.use_dora:
        raise ValueError(
            "path_initial_model_for_weight_conversion cannot convert a DoRA adapter (its magnitude is not a "
            "low-rank difference); save it without the conversion"
        )
    if not (is_weight_moving_init(config.init_lora_weights) or config.init_lora_weights is True):
        warnings.warn(
            "`path_initial_model_for_weight_conversion` only works for converting a PiSSA/CorDA/OLoRA/LoRA-GA "
            "adapter to a LoRA adapter",
            stacklevel=5,
        )
    initial = load_peft_weights(initial_path)
    converted = convert_to_plain_lora(tensors, initial)
    initial_config = copy.deepcopy(config)
    initial_config.init_lora_weights = True
    initial_config.inference_mode = True
    atomic_write_files(
        {os.path.join(initial_path, CONFIG_NAME): text_writer(initial_config.to_json_string())}
    )
    out = copy.deepcopy(config)
    out.init_lora_weights = True
    out.r = config.r * 2
    out.lora_alpha = doubled_alpha(config.lora_alpha, config.use_rslora)
    out.rank_pattern = {k: 2 * v for k, v in (config.rank_pattern or {}).items()}
    out.alpha_pattern = {k: 2 * v for k, v in (config.alpha_pattern or {}).items()}
    return out, converted
