"""File names and per-architecture default target modules (identical to HF PEFT's tables)."""

from __future__ import annotations

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
}

# IA3: (target modules, feed-forward modules) per architecture, for the IA3 method.
IA3_DEFAULT_TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "t5": (["k", "v", "wo"], ["wo"]),
    "mt5": (["k", "v", "wi_1"], ["wi_1"]),
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "bloom": (["query_key_value", "mlp.dense_4h_to_h"], ["mlp.dense_4h_to_h"]),
    "opt": (["k_proj", "v_proj", "fc2"], ["fc2"]),
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "roberta": (["key", "value", "output.dense"], ["output.dense"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "mistral": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "qwen2": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
}
