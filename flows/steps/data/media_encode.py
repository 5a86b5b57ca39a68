"""Storing checked media rows compactly, and the batches the model's own processor makes of them.

| task         | every split                          | validation / test (for the report) |
|--------------|--------------------------------------|------------------------------------|
| image_cls    | image_bytes (as found), labels       | source (file or row)               |
| semantic_seg | image_bytes, mask_bytes (PNG, ids)   | source                             |
| asr          | audio_bytes (as found), labels (ids) | source, reference (the transcript) |

`MediaCollator` runs the model's processor on each batch, in training and evaluation alike.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

from flows.params import FinetuneParams
from flows.steps.data.media import _open, _source, load_audio, load_image, load_mask


def encoder(
    params: FinetuneParams, tokenizer: Any, label_names: list[str] | None, split: str, base_dir: str | None
) -> Callable[[dict[str, list[Any]], list[int]], dict[str, list[Any]]]:
    """The batched map function (with indices) that stores each checked row compactly: its image or
    audio as encoded bytes (as found, or PNG for decoded images and masks) and its label ids. The
    model's processor runs on each batch when it is used (`MediaCollator`): a processed dataset
    (224 px float pixels, 30 s log-mel windows) would be tens of GB for a real dataset."""
    d, task = params.data, params.model.task
    keep_raw = split != "train"
    to_id = {name: i for i, name in enumerate(label_names or [])}

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        if task == "asr":
            out["audio_bytes"] = [_bytes(v, base_dir) for v in batch[d.audio_column]]
            out["labels"] = [list(ids) for ids in tokenizer(batch[d.text_column]).input_ids]
            if keep_raw:
                out["reference"] = list(batch[d.text_column])
        else:
            out["image_bytes"] = [_bytes(v, base_dir) for v in batch[d.image_column]]
            if task == "image_cls":
                out["labels"] = [v if isinstance(v, int) else to_id[v] for v in batch[d.label_column]]
            else:  # masks in training ids (data.reduce_labels applied), as 8-bit PNGs
                out["mask_bytes"] = [
                    _png(load_mask(v, base_dir, d.reduce_labels)) for v in batch[d.mask_column]
                ]
        if keep_raw:
            column = d.audio_column if task == "asr" else d.image_column
            out["source"] = [_source(v) or f"{split} row {index}" for index, v in zip(indices, batch[column])]
        return out

    return encode


def _bytes(value: Any, base_dir: str | None) -> bytes:
    """The encoded file bytes of a media value (a decoded PIL image becomes a PNG)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    with _open(value, base_dir) as fh:
        return bytes(fh.read())


def _png(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class MediaCollator:
    """Model inputs for a batch of stored rows, made by the model's own processor.

    image_cls / semantic_seg: `pixel_values` (resized, normalised) and `labels` (class ids, or the
    masks resized by nearest neighbour); with `flip`, each image and its mask are mirrored left-right
    with probability 1/2 (training only: data.augment). asr: `input_features` (log-mel at the
    extractor's rate; audio resampled when `resample`) and `labels` (the transcript's ids, -100 as
    padding, without the decoder start token, which the model puts in front itself).
    """

    def __init__(
        self,
        task: str,
        processor: Any,
        resample: bool = True,
        flip: bool = False,
        start_token: int | None = None,
        dtype: Any = None,
    ) -> None:
        self.task, self.processor, self.resample = task, processor, resample
        self.flip, self.start = flip, start_token
        # The base model's float dtype: a bf16 / fp16 base takes its pixels or log-mels in that dtype.
        self.dtype = dtype

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if self.task == "asr":
            extractor = self.processor.feature_extractor
            rate = int(extractor.sampling_rate)
            audio = [load_audio({"bytes": f["audio_bytes"]}, None, rate, self.resample) for f in features]
            inputs = extractor(audio, sampling_rate=rate, return_tensors="pt").input_features
            labels = _pad_labels([list(f["labels"]) for f in features], self.start)
            return {"input_features": inputs.to(self.dtype or inputs.dtype), "labels": labels}
        images = [load_image({"bytes": f["image_bytes"]}, None) for f in features]
        if self.task == "image_cls":
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            labels = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
        else:
            masks = [load_mask({"bytes": f["mask_bytes"]}, None) for f in features]
            # Masks are in training ids already: the processor must not reduce them again.
            enc = self.processor(
                images=images, segmentation_maps=masks, do_reduce_labels=False, return_tensors="pt"
            )
            pixels, labels = enc["pixel_values"], enc["labels"].long()
        if self.flip:
            mirrored = torch.rand(len(features)) < 0.5
            pixels[mirrored] = pixels[mirrored].flip(-1)
            if labels.dim() == 3:  # masks follow their images
                labels[mirrored] = labels[mirrored].flip(-1)
        return {"pixel_values": pixels.to(self.dtype or torch.float32), "labels": labels}


def _pad_labels(rows: list[list[int]], start: int | None) -> Any:
    import torch

    if start is not None and rows and all(row and row[0] == start for row in rows):
        rows = [row[1:] for row in rows]
    width = max(len(row) for row in rows)
    padded = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return padded


def float_dtype(model: Any) -> Any:
    """The dtype of a (wrapped) model's base weights, which its float inputs must match."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "dtype", None)
