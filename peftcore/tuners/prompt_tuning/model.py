"""`PromptEmbedding`: the prompt-tuning encoder, a table of `n × submodules` virtual-token embeddings.

    prompts = E[0..n-1]            E: (num_virtual_tokens × num_transformer_submodules, token_dim)

It starts as the embeddings of a text's tokens (TEXT), of random vocabulary ids (SAMPLE_VOCAB), or
N(0, 1) (RANDOM, `nn.Embedding`'s own init).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from peftcore.tuners.prompt import BasePromptEncoder
from peftcore.tuners.prompt_tuning.config import PromptTuningConfig, PromptTuningInit


class PromptEmbedding(BasePromptEncoder):
    """Prompt tuning's encoder. `word_embeddings` is the base model's input embedding (for TEXT and
    SAMPLE_VOCAB init)."""

    needs_word_embeddings = True

    def __init__(self, config: PromptTuningConfig, word_embeddings: nn.Module | None) -> None:
        super().__init__(config)
        rows = config.total_virtual_tokens
        self.embedding = nn.Embedding(rows, config.token_dim or 0)
        if config.inference_mode:
            return  # the saved embeddings are loaded next
        init = PromptTuningInit(config.prompt_tuning_init)
        if init == PromptTuningInit.RANDOM:
            return
        if word_embeddings is None:
            raise ValueError(
                f"prompt_tuning_init={init.value!r} needs the model's input embeddings, but none were found; "
                "use prompt_tuning_init='RANDOM'"
            )
        weight: Any = word_embeddings.weight
        if init == PromptTuningInit.SAMPLE_VOCAB:
            ids = torch.randint(0, weight.shape[0], (rows,), dtype=torch.long)
        else:
            ids = torch.tensor(_text_token_ids(config, rows), dtype=torch.long)
        with torch.no_grad():
            self.embedding.weight = nn.Parameter(
                word_embeddings(ids.to(weight.device)).detach().clone().float()
            )

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding(indices)


def _text_token_ids(config: PromptTuningConfig, rows: int) -> list[int]:
    """The init text's token ids, repeated and cut to `rows`."""
    from transformers import AutoTokenizer

    kwargs = dict(config.tokenizer_kwargs or {})
    kwargs.pop("trust_remote_code", None)  # never run a repository's code to initialise a prompt
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name_or_path, **kwargs)
    ids = list(tokenizer(config.prompt_tuning_init_text)["input_ids"])
    if not ids:
        raise ValueError(
            f"prompt_tuning_init_text={config.prompt_tuning_init_text!r} tokenizes to no tokens; give a "
            "non-empty text"
        )
    return (ids * math.ceil(rows / len(ids)))[:rows]
