"""Tiny, offline, deterministic model directories and datasets for the pipeline's tests.

`model_dir(root, task)` writes a tokenizer trained here on a fixed corpus plus a tiny model built
from a config, the way a real checkpoint directory looks, so `FinetuneParams.model.name_or_path`
can point at it:

| task        | model                                  | tokenizer                                   |
|-------------|----------------------------------------|---------------------------------------------|
| seq_cls     | BertModel (the head is new, as for a   | WordPiece, lowercasing, [CLS] x [SEP]       |
| token_cls   | real pretrained encoder)               |                                             |
| causal_lm   | GPT2LMHeadModel                        | byte-level, <|endoftext|> = bos = eos,      |
|             |                                        | no pad token (the step sets pad = eos)      |
| seq2seq_lm  | T5ForConditionalGeneration             | Metaspace Unigram, <pad>=0 </s>=1 <unk>=2,  |
|             |                                        | "x </s>"                                    |

The vocabularies are spelled out (corpus words + every printable ASCII char), not trained, so any
ASCII text tokenizes without <unk> and the same call writes the same files: the weights come from a
fixed seed.
`rows(task, n)` gives tiny example rows and `write_jsonl` writes them.
"""

from __future__ import annotations

import json
import os
import re
import string
from pathlib import Path
from typing import Any

import torch

TASKS = ("seq_cls", "token_cls", "causal_lm", "seq2seq_lm")
# The metrics every tracked training run logs, whatever its task and evaluation settings.
RUN_METRICS = frozenset(
    {
        "trainable_params",
        "all_params",
        "trainable_percent",
        "adapter_size_bytes",
        "train_loss",
        "train_runtime_s",
        "train_tokens_per_s",
        "peak_memory_mb",
        "data_truncated_rows",
        "data_dropped_rows",
    }
)
LABELS = ["negative", "positive"]
TAGS = ["B-LOC", "B-PER", "O"]
MAX_POSITIONS = 256  # above the default data.max_length (128) plus special tokens

CORPUS = [
    "the movie was great and the actors were wonderful",
    "a terrible film with a boring story",
    "i loved the music but the ending was weak",
    "paris is the capital of france",
    "alice met bob in london last year",
    "translate english to french: the cat sits on the mat",
    "le chat est assis sur le tapis",
    "question: what is two plus two? answer: four",
    "review: not good at all. sentiment: negative",
    "review: really good fun. sentiment: positive",
]
_ALPHABET = list(string.ascii_letters + string.digits + string.punctuation)


def _words() -> list[str]:
    """The corpus's distinct words (lower case, punctuation split off), sorted."""
    return sorted({w for line in CORPUS for w in re.findall(r"\w+", line.lower())})


def wordpiece_tokenizer() -> Any:
    """A BERT-style fast tokenizer: WordPiece over the corpus words + every ASCII char (and `##` char).

    The vocabulary is spelled out, not trained, so it is identical on every call.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *_ALPHABET,
        *(f"##{c}" for c in _ALPHABET),
        *_words(),
    ]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_POSITIONS,
    )


def bytelevel_tokenizer() -> Any:
    """A GPT-2-style byte-level tokenizer (one token per byte, no merges: fixed by construction).

    `<|endoftext|>` is bos and eos, and there is no pad token, as with GPT-2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<|endoftext|>", *sorted(pre_tokenizers.ByteLevel.alphabet())]
    tok = Tokenizer(models.BPE({p: i for i, p in enumerate(pieces)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        model_max_length=MAX_POSITIONS,
    )


# ChatML, written here: each turn is <|im_start|>role\ncontent<|im_end|>\n; the generation prompt
# opens an assistant turn. The model ends its turn with <|im_end|>, the tokenizer's eos.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chat_tokenizer(template: str | None = CHAT_TEMPLATE) -> Any:
    """The byte-level tokenizer with ChatML turn markers as special tokens, like Qwen2.5-Instruct's:
    eos = <|im_end|>, pad = <|endoftext|>, and `template` as its chat template (None: no template)."""
    tok = bytelevel_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.chat_template = template
    return tok


def t5_tokenizer() -> Any:
    """A T5-style tokenizer: Metaspace word pieces, `<pad>`=0, `</s>`=1, `<unk>`=2, `</s>` appended.

    Unigram over "▁word" for the corpus words plus single chars (words score higher, so known words
    stay whole); spelled out, not trained.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = ["▁", *_ALPHABET, *(f"▁{c}" for c in _ALPHABET)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(c, -10.0) for c in chars] + [(f"▁{w}", -1.0) for w in _words() if f"▁{w}" not in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=MAX_POSITIONS,
    )


def tiny_model(task: str, tokenizer: Any, seed: int = 0) -> Any:
    """A tiny transformers model for `task` whose vocabulary matches `tokenizer` (fixed seed)."""
    import transformers as tf

    torch.manual_seed(seed)
    vocab = len(tokenizer)
    if task in ("seq_cls", "token_cls"):
        cfg: Any = tf.BertConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=MAX_POSITIONS, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        return tf.BertModel(cfg)
    if task == "chat":
        cfg = tf.Qwen2Config(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS * 4, tie_word_embeddings=True,
            initializer_range=0.5,  # logits a 32-wide model can move far: at 0.02 they stay near uniform
            bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        return tf.Qwen2ForCausalLM(cfg)
    if task == "causal_lm":
        cfg = tf.GPT2Config(
            vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=MAX_POSITIONS,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        return tf.GPT2LMHeadModel(cfg)
    if task == "seq2seq_lm":
        cfg = tf.T5Config(
            vocab_size=vocab, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0,
        )  # fmt: skip
        return tf.T5ForConditionalGeneration(cfg)
    raise ValueError(f"task={task!r}: use one of {TASKS}")


def tokenizer_for(task: str) -> Any:
    """The fixture tokenizer family used for `task`."""
    if task in ("seq_cls", "token_cls"):
        return wordpiece_tokenizer()
    if task == "causal_lm":
        return bytelevel_tokenizer()
    if task == "chat":
        return chat_tokenizer()
    if task == "seq2seq_lm":
        return t5_tokenizer()
    raise ValueError(f"task={task!r}: use one of {TASKS}")


def model_dir(root: str | os.PathLike[str], task: str, seed: int = 0) -> str:
    """Write tokenizer + tiny model for `task` into `root/<task>` and return that directory.

    `task` is one of TASKS, or "chat": a tiny Qwen2 causal LM with `chat_tokenizer()`."""
    out = Path(root) / task
    tokenizer = tokenizer_for(task)
    tokenizer.save_pretrained(out)
    tiny_model(task, tokenizer, seed).save_pretrained(out)
    return str(out)


def rows(task: str, n: int = 8) -> list[dict[str, Any]]:
    """`n` example rows for `task`, in the default column names of `DataParams`.

    seq_cls: text/label (LABELS); token_cls: tokens/tags (TAGS); causal_lm and seq2seq_lm:
    text/target (use `prompt_template="Review: {text}\\nSentiment:"` or text_column alone).
    """
    reviews = [
        ("the movie was great", "positive"),
        ("a terrible boring film", "negative"),
        ("i loved the music", "positive"),
        ("the ending was weak", "negative"),
    ]
    sentences = [
        (["alice", "met", "bob"], ["B-PER", "O", "B-PER"]),
        (["paris", "is", "great"], ["B-LOC", "O", "O"]),
        (["bob", "visited", "london", "today"], ["B-PER", "O", "B-LOC", "O"]),
    ]
    out: list[dict[str, Any]] = []
    for i in range(n):
        if task == "seq_cls":
            text, label = reviews[i % len(reviews)]
            out.append({"text": text, "label": label})
        elif task == "token_cls":
            tokens, tags = sentences[i % len(sentences)]
            out.append({"tokens": tokens, "label": tags})
        elif task in ("causal_lm", "seq2seq_lm"):
            text, label = reviews[i % len(reviews)]
            out.append({"text": text, "target": label})
        else:
            raise ValueError(f"task={task!r}: use one of {TASKS}")
    return out


def write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> str:
    """Write `records` as JSON lines and return the path as a string."""
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


# -- stand-ins for the recipes in configs/ ----------------------------------------------------------
# Tiny models of the families the recipes name, with tokenizers that behave like theirs where the
# pipeline can tell the difference (what they put before text, how they end it, the chat template).

# A ChatML template in the manner of Qwen2.5-Instruct's: a conversation without a system turn gets a
# default one, so every rendering starts with a system turn. (Written here; not Qwen's text.)
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
QWEN_STYLE_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{% endif %}" + CHAT_TEMPLATE
)


def mt5_tokenizer(words: list[str]) -> Any:
    """An mT5-style tokenizer (Metaspace Unigram, `<pad>`=0, `</s>`=1, `<unk>`=2, `</s>` appended)
    whose whole-word pieces are the corpus words plus `words`, so e.g. class names a recipe
    generates are one piece each, as sentencepiece makes common words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = ["▁", *_ALPHABET, *(f"▁{c}" for c in _ALPHABET)]
    whole = sorted({f"▁{w.lower()}" for w in [*_words(), *words]} - set(chars))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *((c, -10.0) for c in chars)]
    vocab += [(w, -1.0) for w in whole]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=MAX_POSITIONS,
    )  # fmt: skip


def opt_tokenizer() -> Any:
    """An OPT-style byte-level tokenizer: `</s>` is bos and eos and is put before every text (as
    OPT's tokenizer does), `<pad>` pads. One token per byte, no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = ["<s>", "<pad>", "</s>", "<unk>", *sorted(pre_tokenizers.ByteLevel.alphabet())]
    tok = Tokenizer(models.BPE({p: i for i, p in enumerate(pieces)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=4 * MAX_POSITIONS,
    )  # fmt: skip


def family_model(family: str, tokenizer: Any, seed: int = 0) -> Any:
    """A tiny model of `family` ("mt5", "opt" or "qwen2") sized to `tokenizer` (fixed seed)."""
    import transformers as tf

    if family == "qwen2":
        return tiny_model("chat", tokenizer, seed)
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    if family == "mt5":
        cfg: Any = tf.MT5Config(
            vocab_size=vocab, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        return tf.MT5ForConditionalGeneration(cfg)
    if family == "opt":
        cfg = tf.OPTConfig(
            vocab_size=vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
            word_embed_proj_dim=32, max_position_embeddings=4 * MAX_POSITIONS,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        return tf.OPTForCausalLM(cfg)
    raise ValueError(f"family={family!r}: use mt5, opt or qwen2")


def family_model_dir(root: str | os.PathLike[str], family: str, tokenizer: Any, seed: int = 0) -> str:
    """Write `tokenizer` and a tiny `family` model into `root/<family>`; return that directory."""
    out = Path(root) / family
    tokenizer.save_pretrained(out)
    family_model(family, tokenizer, seed).save_pretrained(out)
    return str(out)
