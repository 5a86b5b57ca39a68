"""Images, masks and audio: the columns a media task reads, and decoding them.

A media column may hold a datasets `Image` / `Audio` feature (decoded here, never by datasets:
its Audio decoding needs torchcodec), `{bytes, path}` dicts, or file paths (relative ones resolve
against the data file's folder, then the working directory). Audio is read with soundfile, mixed
down to mono and resampled to the feature extractor's rate with `scipy.signal.resample_poly`.

The checks before any model loads are in `media_check`, the stored rows and the batches the
model's processor makes of them in `media_encode`.
"""

from __future__ import annotations

import io
import os
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
