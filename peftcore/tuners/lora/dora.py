"""DoRA (weight-decomposed LoRA) as plain functions over "row" views of the weights.

Every layer type presents its base weight W and its LoRA product B A with one row per output unit
(Linear: (out, in); Conv: (out, in·k); Embedding: W transposed, (dim, vocab)). DoRA keeps a learned
magnitude m, one entry per row, and uses the combined weight rescaled row by row:

    W' = (m / ‖W + s·B A‖) · (W + s·B A)        (the norm taken per row, detached in forward)

so at init (m = ‖W + s·B A‖) the layer is unchanged. Merging writes W' into the base weight; the
norm used is kept so unmerging can divide it out exactly.
"""

from __future__ import annotations

import torch
from torch import nn


class DoraMagnitude(nn.Module):
    """One adapter's magnitude vector m, as `weight` (HF PEFT's in-memory layout; on disk the key is just
    `<path>.lora_magnitude_vector`)."""

    merge_norm: torch.Tensor | None

    def __init__(self, magnitude: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(magnitude)
        # The per-row norm a merge used, kept to unmerge exactly: a buffer, so `.to()` moves it with the
        # layer (merge on CPU, move to GPU, unmerge); not persistent, so never saved.
        self.register_buffer("merge_norm", None, persistent=False)


def weight_norm(
    weight_rows: torch.Tensor, lora_rows: torch.Tensor, scaling: float | torch.Tensor
) -> torch.Tensor:
    """‖W + s·B A‖ per row."""
    return torch.linalg.norm(weight_rows + scaling * lora_rows, dim=1)


def merge_rows(
    weight_rows: torch.Tensor, lora_rows: torch.Tensor, scaling: float | torch.Tensor, magnitude: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', the norm used): the merged weight rows and the per-row norm needed to unmerge."""
    combined = weight_rows + scaling * lora_rows
    norm = torch.linalg.norm(combined, dim=1)
    return (magnitude / norm).unsqueeze(1) * combined, norm


def unmerge_rows(
    merged_rows: torch.Tensor,
    lora_rows: torch.Tensor,
    scaling: float | torch.Tensor,
    magnitude: torch.Tensor,
    norm: torch.Tensor,
) -> torch.Tensor:
    """W from W' (inverse of `merge_rows`, given the norm it returned)."""
    return merged_rows / (magnitude / norm).unsqueeze(1) - scaling * lora_rows
