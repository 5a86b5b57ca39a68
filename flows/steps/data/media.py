"""Images, masks and audio: decoding, the checks before any model loads, and the processor's encoding.

A media column may hold a datasets `Image` / `Audio` feature (decoded here, never by datasets:
its Audio decoding needs torchcodec), `{bytes, path}` dicts, or file paths (relative ones resolve
against the data file's folder, then the working directory). Audio is read with soundfile, mixed
down to mono and resampled to the feature extractor's rate with `scipy.signal.resample_poly`.

`check` decodes every row of every split before the processor or the model loads: an image that
does not decode, a mask whose size differs from its image, a mask class or a label outside the
label map, audio that does not decode or (with `data.resample=false`) has another rate fails naming
the split, the row and the parameter. `encoder` then stores the checked rows per task:

| task         | every split                          | validation / test (for the report) |
|--------------|--------------------------------------|------------------------------------|
| image_cls    | image_bytes (as found), labels       | source (file or row)               |
| semantic_seg | image_bytes, mask_bytes (PNG, ids)   | source                             |
| asr          | audio_bytes (as found), labels (ids) | source, reference (the transcript) |

`MediaCollator` runs the model's processor on each batch (training and evaluation alike).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from flows.params import FinetuneParams

IGNORE_INDEX = 255  # mask value that no loss or metric counts (the SegFormer convention)


def media_columns(params: FinetuneParams) -> list[tuple[str, str]]:
    """(how an error names it, column) of every column a media task reads."""
    d, task = params.data, params.model.task
    if task == "image_cls":
        return [(f"data.image_column={d.image_column!r}", d.image_column), _label(params)]
    if task == "semantic_seg":
        return [
            (f"data.image_column={d.image_column!r}", d.image_column),
            (f"data.mask_column={d.mask_column!r}", d.mask_column),
        ]
    return [
        (f"data.audio_column={d.audio_column!r}", d.audio_column),
        (f"data.text_column={d.text_column!r}", d.text_column),
    ]


def _label(params: FinetuneParams) -> tuple[str, str]:
    return (f"data.label_column={params.data.label_column!r}", params.data.label_column)


def undecoded(split: Any, params: FinetuneParams) -> Any:
    """`split` with its Image / Audio features left as {bytes, path} (this module decodes them)."""
    from datasets import Audio, Image

    for _, column in media_columns(params):
        feature = split.features.get(column)
        if isinstance(feature, Image):
            split = split.cast_column(column, Image(decode=False))
        elif isinstance(feature, Audio):
            split = split.cast_column(column, Audio(decode=False))
    return split


def _source(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("path")
    return None


def _open(value: Any, base_dir: str | None) -> Any:
    """A binary file object for a path, a {bytes, path} dict or raw bytes."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return io.BytesIO(value["bytes"])
        value = value.get("path")
    if isinstance(value, bytes):
        return io.BytesIO(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a file path or {{bytes, path}}, got {type(value).__name__}")
    for candidate in ([os.path.join(base_dir, value)] if base_dir else []) + [value]:
        if os.path.isfile(candidate):
            return open(candidate, "rb")
    raise FileNotFoundError(f"no file {value!r} (looked in {base_dir or os.getcwd()})")


def load_image(value: Any, base_dir: str | None) -> Any:
    """The image as an RGB PIL image (a decoded PIL image passes through)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    with _open(value, base_dir) as fh:
        image = Image.open(fh)
        image.load()
    return image.convert("RGB")


def load_mask(value: Any, base_dir: str | None, reduce_labels: bool = False) -> np.ndarray:
    """A segmentation mask as an (H, W) integer array of class ids (a 2-D list passes through).

    `reduce_labels`: the file's 0 is "unlabelled" (becomes IGNORE_INDEX) and its ids shift down by one.
    """
    from PIL import Image

    if isinstance(value, list | Image.Image):
        array = np.asarray(value, dtype=np.int64)
    else:
        with _open(value, base_dir) as fh:
            image = Image.open(fh)
            image.load()
        array = np.asarray(image, dtype=np.int64)
    if array.ndim == 3:  # a mask saved as RGB: the class id is in the first channel
        array = array[..., 0]
    if reduce_labels:
        array = np.where(array == 0, IGNORE_INDEX, array - 1)
        array[array == IGNORE_INDEX - 1] = IGNORE_INDEX  # the file's 255 stays ignored
    return array


def load_audio(value: Any, base_dir: str | None, rate: int, resample: bool) -> np.ndarray:
    """Mono float32 samples at `rate` (resampled when `resample`, else a different rate fails)."""
    import soundfile as sf

    if isinstance(value, dict) and "array" in value:  # an already decoded row
        samples, found = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    else:
        with _open(value, base_dir) as fh:
            samples, found = sf.read(fh, dtype="float32", always_2d=True)
        samples = samples.mean(axis=1)
    if found != rate:
        if not resample:
            raise ValueError(
                f"audio at {found} Hz, the feature extractor takes {rate} Hz; set data.resample=true "
                "to resample it"
            )
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(found, rate)
        samples = resample_poly(samples, rate // g, found // g).astype(np.float32)
    return samples


def check(splits: dict[str, Any], params: FinetuneParams, base_dir: str | None) -> list[str] | None:
    """Decode every row of every split; returns the label names (image_cls, semantic_seg).

    Raises:
        ValueError: a missing column, an undecodable image or audio, a mask of another size than its
            image, a class outside the label map; naming the split, the row and the parameter.
    """
    d, task = params.data, params.model.task
    for name, split in splits.items():
        if len(split) == 0:
            raise ValueError(f"the {name} split is empty (data.{name}_split={getattr(d, name + '_split')!r})")
        for what, column in media_columns(params):
            if column not in split.column_names:
                raise ValueError(
                    f"{what} is not a column of the {name} split (columns: {split.column_names})"
                )
    names = _label_names(splits, params) if task in ("image_cls", "semantic_seg") else None
    for name, split in splits.items():
        for row, example in enumerate(split):
            where = f"row {row} of the {name} split"
            if task == "asr":
                _check_audio(example, params, base_dir, where)
                if not isinstance(example[d.text_column], str) or not example[d.text_column].strip():
                    raise ValueError(f"{where}: data.text_column={d.text_column!r} holds no transcript")
                continue
            try:
                image = load_image(example[d.image_column], base_dir)
            except Exception as err:
                raise ValueError(
                    f"{where}: data.image_column={d.image_column!r} could not be decoded as an image "
                    f"({_source(example[d.image_column]) or 'inline bytes'}): {type(err).__name__}: {err}"
                ) from None
            if task == "semantic_seg":
                _check_mask(example[d.mask_column], image.size, names or [], base_dir, where, params)
    return names


def _check_audio(example: dict[str, Any], params: FinetuneParams, base_dir: str | None, where: str) -> None:
    d = params.data
    try:
        load_audio(example[d.audio_column], base_dir, params_rate(params), d.resample)
    except Exception as err:
        raise ValueError(
            f"{where}: data.audio_column={d.audio_column!r} "
            f"({_source(example[d.audio_column]) or 'inline bytes'}): {type(err).__name__}: {err}"
        ) from None


_rates: dict[str, int] = {}


def params_rate(params: FinetuneParams) -> int:
    """The feature extractor's sampling rate (read once from its config; 16 kHz when it has none)."""
    from flows.steps.model import resolve_model_path

    path = resolve_model_path(params.model)
    if path not in _rates:
        from transformers import AutoFeatureExtractor

        extractor = AutoFeatureExtractor.from_pretrained(path, revision=params.model.revision)
        _rates[path] = int(getattr(extractor, "sampling_rate", 16000))
    return _rates[path]


def _check_mask(
    value: Any,
    size: tuple[int, int],
    names: list[str],
    base_dir: str | None,
    where: str,
    params: FinetuneParams,
) -> None:
    column = params.data.mask_column
    try:
        mask = load_mask(value, base_dir, params.data.reduce_labels)
    except Exception as err:
        raise ValueError(
            f"{where}: data.mask_column={column!r} could not be decoded as a mask: {type(err).__name__}: {err}"
        ) from None
    width, height = size
    if mask.shape != (height, width):
        raise ValueError(
            f"{where}: the mask (data.mask_column={column!r}) is {mask.shape[1]}x{mask.shape[0]} but its "
            f"image is {width}x{height}; a mask holds one class id per pixel of its image"
        )
    classes = set(np.unique(mask).tolist()) - {IGNORE_INDEX}
    unknown = sorted(c for c in classes if not 0 <= c < len(names))
    if unknown:
        raise ValueError(
            f"{where}: the mask (data.mask_column={column!r}) has class ids {unknown[:10]} outside the label map "
            f"0..{len(names) - 1} ({IGNORE_INDEX} = ignored); set data.label_names to every class"
        )


def _label_names(splits: dict[str, Any], params: FinetuneParams) -> list[str]:
    """image_cls: the label feature's names / data.label_names / the sorted labels, every label checked;
    semantic_seg: data.label_names, or the mask feature's names (required: a mask is only ids)."""
    d = params.data
    if params.model.task == "semantic_seg":
        if not d.label_names:
            raise ValueError(
                "model.task='semantic_seg' needs data.label_names: the class names in id order (a mask holds "
                "only ids), e.g. the dataset's id2label"
            )
        if len(d.label_names) > IGNORE_INDEX:
            raise ValueError(
                f"data.label_names has {len(d.label_names)} classes; masks are stored as 8-bit images, so "
                f"at most {IGNORE_INDEX} classes (id {IGNORE_INDEX} marks ignored pixels)"
            )
        return list(d.label_names)
    from flows.steps.data.validate import _label_names as class_names

    return class_names(splits, d)


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
    ) -> None:
        self.task, self.processor, self.resample, self.flip, self.start = (
            task,
            processor,
            resample,
            flip,
            start_token,
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if self.task == "asr":
            extractor = self.processor.feature_extractor
            rate = int(extractor.sampling_rate)
            audio = [load_audio({"bytes": f["audio_bytes"]}, None, rate, self.resample) for f in features]
            inputs = extractor(audio, sampling_rate=rate, return_tensors="pt").input_features
            return {
                "input_features": inputs,
                "labels": _pad_labels([list(f["labels"]) for f in features], self.start),
            }
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
        return {"pixel_values": pixels.float(), "labels": labels}


def _pad_labels(rows: list[list[int]], start: int | None) -> Any:
    import torch

    if start is not None and rows and all(row and row[0] == start for row in rows):
        rows = [row[1:] for row in rows]
    width = max(len(row) for row in rows)
    padded = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return padded
