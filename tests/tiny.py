"""Tiny transformers models built from configs (no downloads), one per architecture family."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ARCHS = ("llama", "gpt2", "opt", "t5", "bert")
VOCAB = 96


def build(arch: str, seed: int = 0) -> nn.Module:
    """A deterministic tiny model of `arch` in eval mode (same seed → same weights)."""
    import transformers as tf

    torch.manual_seed(seed)
    if arch == "llama":
        cfg: Any = tf.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=64,
        )
        model: nn.Module = tf.LlamaForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64)
        model = tf.GPT2LMHeadModel(cfg)
    elif arch == "opt":
        cfg = tf.OPTConfig(
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            word_embed_proj_dim=32,
        )
        model = tf.OPTForCausalLM(cfg)
    elif arch == "t5":
        cfg = tf.T5Config(
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_heads=4,
            num_layers=2,
            num_decoder_layers=2,
            vocab_size=VOCAB,
            decoder_start_token_id=0,
            pad_token_id=0,
        )
        model = tf.T5ForConditionalGeneration(cfg)
    elif arch == "bert":
        cfg = tf.BertConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            num_labels=3,
        )
        model = tf.BertForSequenceClassification(cfg)
    else:
        raise ValueError(f"unknown tiny arch {arch!r}")
    return model.eval()


TASK = {
    "llama": "CAUSAL_LM",
    "gpt2": "CAUSAL_LM",
    "opt": "CAUSAL_LM",
    "t5": "SEQ_2_SEQ_LM",
    "bert": "SEQ_CLS",
}


def inputs(arch: str, batch: int = 2, length: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    """Model inputs for `arch` (seq2seq models also get decoder inputs)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if arch == "t5":
        out["decoder_input_ids"] = torch.randint(3, VOCAB, (batch, 5), generator=g)
    return out


def output(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits
