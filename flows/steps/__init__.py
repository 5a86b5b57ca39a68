"""Plain step functions of the pipeline: no Prefect, no MLflow. Tasks pass paths and ids, not models.

Each step's result is a small dataclass defined here, so the flow, the tracking layer and the tests
share one contract.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TokenizedData:
    """A tokenized dataset on disk (`datasets.DatasetDict.save_to_disk`: "train", "test", and
    "validation" when num_validation > 0)."""

    path: str
    fingerprint: str  # content hash of the RAW data (+ revision); the MLflow dataset digest
    cache_key: str  # hash of everything that shapes the tokenized output
    task: str
    label_names: list[str] | None
    num_train: int
    num_test: int
    num_train_tokens: int
    source: str  # human-readable origin: Hub id@revision or file paths
    cached: bool  # True when this call loaded the cache instead of tokenizing
    num_validation: int = 0
    # {split: {"truncated": rows, "dropped": rows}} under data.truncation
    truncation: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def truncated_rows(self) -> int:
        return sum(split.get("truncated", 0) for split in self.truncation.values())

    @property
    def dropped_rows(self) -> int:
        return sum(split.get("dropped", 0) for split in self.truncation.values())


@dataclass
class WrapResult:
    trainable_params: int
    all_params: int
    trainable_percent: float
    peft_config: dict[str, Any]


@dataclass
class TrainResult:
    adapter_dir: str
    global_step: int
    train_loss: float
    train_runtime_s: float
    train_tokens_per_s: float
    peak_memory_mb: float
    device: str
    log_history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None
    # accelerate's distributed type of the training: NO (one process), MULTI_GPU (DDP), FSDP, DEEPSPEED
    strategy: str = "NO"


@dataclass
class EvalResult:
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]  # a sample: input, reference, prediction
    # Image tasks: a PNG of the first images with predicted vs true labels (segmentation: mask overlays)
    figure: bytes | None = None


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (data fingerprints, adapter checksums)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
