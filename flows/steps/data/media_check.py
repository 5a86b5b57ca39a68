"""The checks on image, mask and audio rows, before the processor or the model loads.

`check` decodes every row of every split: an image that does not decode, a mask whose size differs
from its image, a mask class or a label outside the label map, audio that does not decode or (with
`data.resample=false`) has another rate than the feature extractor's fails naming the split, the row
and the parameter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flows.params import FinetuneParams
from flows.steps.data.media import IGNORE_INDEX, _source, load_audio, load_image, load_mask, media_columns


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
    """image_cls: data.label_names / the label feature's names / the sorted labels, every label
    checked (the first one outside a given label map is named with its row); semantic_seg:
    data.label_names (required: a mask holds only ids)."""
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

    feature = splits["train"].features.get(d.label_column)
    given = d.label_names or getattr(feature, "names", None)
    if given:
        for name, split in splits.items():
            for row, value in enumerate(split[d.label_column]):
                known = (
                    0 <= value < len(given)
                    if isinstance(value, int) and not isinstance(value, bool)
                    else value in given
                )
                if not known:
                    raise ValueError(
                        f"row {row} of the {name} split: data.label_column={d.label_column!r} holds {value!r}, "
                        f"which is not in the label map ({len(given)} classes: {list(given)[:10]}); add it to "
                        "data.label_names"
                    )
    return class_names(splits, d)
