"""File names and per-architecture default target modules (identical to HF PEFT's tables)."""

from __future__ import annotations

from typing import Any

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_WEIGHTS_NAME = "adapter_model.safetensors"
WEIGHTS_NAME = "adapter_model.bin"  # legacy pickle format: read-only, weights_only=True
MODEL_CARD_NAME = "README.md"

# The Hugging Face PEFT release whose on-disk format peftcore reads and writes (see FORMAT.md); it is
# what adapter_config.json records as `peft_version`.
PEFT_FORMAT_VERSION = "0.21.2"

# Tasks whose head is trained and saved in full alongside the adapter.
TASK_HEAD_MODULES: dict[str, tuple[str, ...]] = {
    "SEQ_CLS": ("classifier", "score"),
    "TOKEN_CLS": ("classifier", "score"),
    "QUESTION_ANS": ("qa_outputs",),
}

_QV = ["q_proj", "v_proj"]

LORA_DEFAULT_TARGETS: dict[str, list[str]] = {
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "bart": _QV,
    "gpt2": ["c_attn"],
    "bloom": ["query_key_value"],
    "blip-2": ["q", "v", "q_proj", "v_proj"],
    "opt": _QV,
    "gptj": _QV,
    "gpt_neox": ["query_key_value"],
    "gpt_neo": _QV,
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "deberta-v2": ["query_proj", "value_proj"],
    "deberta": ["in_proj"],
    "layoutlm": ["query", "value"],
    "llama": _QV,
    "chatglm": ["query_key_value"],
    "gpt_bigcode": ["c_attn"],
    "mpt": ["Wqkv"],
    "RefinedWebModel": ["query_key_value"],
    "RefinedWeb": ["query_key_value"],
    "falcon": ["query_key_value"],
    "btlm": ["c_proj", "c_attn"],
    "codegen": ["qkv_proj"],
    "mistral": _QV,
    "mixtral": _QV,
    "stablelm": _QV,
    "phi": ["q_proj", "v_proj", "fc1", "fc2"],
    "gemma": _QV,
    "gemma2": _QV,
    "gemma3_text": _QV,
    "qwen2": _QV,
    "qwen3": _QV,
    "cohere": _QV,
    "starcoder2": _QV,
    # Beyond text: HF PEFT's image classification, semantic segmentation and Whisper guides name the
    # query / value projections explicitly (its table has no entry for these families). transformers 5
    # names them q_proj / v_proj in ViT and SegFormer too (the guides' "query" / "value" predate that).
    "vit": _QV,
    "deit": _QV,
    "segformer": _QV,
    "whisper": _QV,
}

# HF PEFT's name for the LoRA table (the same dict).
TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING = LORA_DEFAULT_TARGETS
# LoHa and LoKr default to LoRA's targets (copies, as in HF PEFT, so patching one leaves the others).
TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING: dict[str, list[str]] = dict(LORA_DEFAULT_TARGETS)
TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING: dict[str, list[str]] = dict(LORA_DEFAULT_TARGETS)

_KV_DOWN = ["k_proj", "v_proj", "down_proj"]
_QV_DOWN = ["q_proj", "v_proj", "down_proj"]

# IA3 scales the outputs of attention projections and the inputs of one feed-forward layer per block.
TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING: dict[str, list[str]] = {
    "t5": ["k", "v", "wo"],
    "mt5": ["k", "v", "wi_1"],
    "gpt2": ["c_attn", "mlp.c_proj"],
    "bloom": ["query_key_value", "mlp.dense_4h_to_h"],
    "roberta": ["key", "value", "output.dense"],
    "opt": ["q_proj", "k_proj", "fc2"],
    "gptj": ["q_proj", "v_proj", "fc_out"],
    "gpt_neox": ["query_key_value", "dense_4h_to_h"],
    "gpt_neo": ["q_proj", "v_proj", "c_proj"],
    "bart": ["q_proj", "v_proj", "fc2"],
    "gpt_bigcode": ["c_attn", "mlp.c_proj"],
    "llama": _KV_DOWN,
    "llama4": _QV_DOWN,
    "mistral": _KV_DOWN,
    "mixtral": ["k_proj", "v_proj", "w2"],
    "bert": ["key", "value", "output.dense"],
    "deberta-v2": ["key_proj", "value_proj", "output.dense"],
    "deberta": ["in_proj", "output.dense"],
    "RefinedWebModel": ["query_key_value", "dense_4h_to_h"],
    "RefinedWeb": ["query_key_value", "dense_4h_to_h"],
    "falcon": ["query_key_value", "dense_4h_to_h"],
    "phi": ["q_proj", "v_proj", "fc2"],
    "gemma": _QV_DOWN,
    "gemma2": _QV_DOWN,
    "gemma3_text": _QV_DOWN,
    "qwen2": _QV_DOWN,
    "qwen3": _QV_DOWN,
}

# Which of the IA3 targets are feed-forward layers (their INPUT is scaled, not their output).
TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING: dict[str, list[str]] = {
    "t5": ["wo"],
    "mt5": [],
    "gpt2": ["mlp.c_proj"],
    "bloom": ["mlp.dense_4h_to_h"],
    "roberta": ["output.dense"],
    "opt": ["fc2"],
    "gptj": ["fc_out"],
    "gpt_neox": ["dense_4h_to_h"],
    "gpt_neo": ["c_proj"],
    "bart": ["fc2"],
    "gpt_bigcode": ["mlp.c_proj"],
    "llama": ["down_proj"],
    "llama4": ["down_proj"],
    "mistral": ["down_proj"],
    "mixtral": ["w2"],
    "bert": ["output.dense"],
    "deberta-v2": ["output.dense"],
    "deberta": ["output.dense"],
    "RefinedWeb": ["dense_4h_to_h"],
    "RefinedWebModel": ["dense_4h_to_h"],
    "falcon": ["dense_4h_to_h"],
    "phi": ["fc2"],
    "gemma": ["down_proj"],
    "gemma2": ["down_proj"],
    "gemma3_text": ["down_proj"],
    "qwen2": ["down_proj"],
    "qwen3": ["down_proj"],
}

_ALL_ATTN = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]

# AdaLoRA spreads its rank budget over more matrices than LoRA adapts by default.
TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING: dict[str, Any] = {
    "t5": ["q", "k", "v", "o", "wi", "wo"],
    "mt5": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
    "bart": _ALL_ATTN,
    "gpt2": ["c_attn"],
    "bloom": ["query_key_value"],
    "opt": _ALL_ATTN,
    "gptj": _QV,
    "gpt_neox": ["query_key_value"],
    "gpt_neo": _QV,
    "llama": _QV,
    "llama4": _QV,
    "bert": ["query", "value"],
    "roberta": ["query", "key", "value", "dense"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
    "gpt_bigcode": ["c_attn"],
    "deberta": ["in_proj"],
    "gemma": _QV,
    "gemma2": _QV,
    "gemma3_text": _QV,
    "gemma4": r".*language_model\..*\.(q_proj|v_proj)",
    "qwen2": _QV,
    "qwen3": _QV,
    "nemotron_h": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
