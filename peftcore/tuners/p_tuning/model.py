"""`PromptEncoder`: P-tuning's encoder, a trained table passed through a small network.

    MLP:   prompts = W3 relu(W2 relu(W1 E + b1) + b2) + b3
    LSTM:  prompts = MLP2(biLSTM(E))            E: (num_virtual_tokens × submodules, token_dim)

Only the network's OUTPUT is saved (`prompt_embeddings`); a loaded adapter is that table, without the
network (see `peftcore.tuners.prompt`).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from peftcore.tuners.p_tuning.config import PromptEncoderConfig, PromptEncoderReparameterizationType
from peftcore.tuners.prompt import BasePromptEncoder

_MLP_LAYERS = 2  # the config default; the MLP's depth is fixed, as in HF PEFT


class PromptEncoder(BasePromptEncoder):
    """P-tuning's encoder (HF PEFT's name). Its submodule names (`mlp_head`, `lstm_head`) match HF PEFT."""

    def __init__(self, config: PromptEncoderConfig) -> None:
        super().__init__(config)
        token_dim = config.token_dim or 0
        hidden = config.encoder_hidden_size or token_dim
        self.token_dim = token_dim
        self.hidden_size = hidden
        self.encoder_type = PromptEncoderReparameterizationType(config.encoder_reparameterization_type)
        self.embedding = nn.Embedding(config.total_virtual_tokens, token_dim)
        if config.inference_mode:
            return  # the saved output is loaded into `embedding`; the network is not needed
        if self.encoder_type == PromptEncoderReparameterizationType.LSTM:
            self.lstm_head = nn.LSTM(
                input_size=token_dim,
                hidden_size=hidden,
                num_layers=config.encoder_num_layers,
                dropout=config.encoder_dropout,
                bidirectional=True,
                batch_first=True,
            )
            self.mlp_head = nn.Sequential(
                nn.Linear(hidden * 2, hidden * 2), nn.ReLU(), nn.Linear(hidden * 2, token_dim)
            )
        else:
            if config.encoder_num_layers != _MLP_LAYERS:
                warnings.warn(
                    f"for {self.encoder_type.value}, the argument `encoder_num_layers` is ignored. Exactly "
                    f"{_MLP_LAYERS} MLP layers are used.",
                    stacklevel=3,
                )
            self.mlp_head = nn.Sequential(
                nn.Linear(token_dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, token_dim),
            )

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        embeds = self.embedding(indices)
        if self.encoder_type == PromptEncoderReparameterizationType.LSTM:
            # The LSTM reads the virtual tokens as one sequence.
            return self.mlp_head(self.lstm_head(embeds.unsqueeze(0))[0]).squeeze(0)
        return self.mlp_head(embeds)
