"""Scoring image and speech adapters: predictions, metrics and the report figure.

Batches go through `MediaCollator`, the model's processor as training used it (no augmentation):
- image_cls: the argmax class of each image; accuracy / precision / recall / f1 on class ids.
- semantic_seg: the logits (SegFormer: a quarter of the input size) upsampled bilinearly to the
  processed mask's size, the argmax class per pixel; mean IoU, mean and overall pixel accuracy from
  one confusion matrix over the split (pixels marked 255 not scored), accumulated batch by batch so
  no split's masks are held in memory.
- asr: `generate` from the log-mel features (greedy unless eval.num_beams > 1), decoded without
  special tokens; wer / cer against the reference transcripts.

The table has one row per example (input: the file or row it came from). Image tasks also draw the
first rows: each image titled with its predicted and true class, or, for segmentation, the image with
the true mask and with the predicted mask over it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from flows.metrics import compute_metrics
from flows.metrics._segmentation import confusion, scores
from flows.params import FinetuneParams
from flows.steps import EvalResult, TokenizedData
from flows.steps.data.media import IGNORE_INDEX, load_image
from flows.steps.data.media_encode import MediaCollator, float_dtype
from flows.steps.model import generation_language

SHOWN = 8  # rows drawn in the report figure


def score_media(params: FinetuneParams, data: TokenizedData, model: Any, rows: Any) -> EvalResult:
    from flows.steps.model import load_processor

    task, names = params.model.task, data.label_names
    processor = load_processor(params)
    collate = MediaCollator(task, processor, resample=params.data.resample, dtype=float_dtype(model))
    device = next(model.parameters()).device
    size = params.train.eval_batch_size
    predictions: list[Any] = []
    references: list[Any] = []
    counts = np.zeros((len(names or []),) * 2, dtype=np.int64)
    table: list[dict[str, Any]] = []
    shown: list[tuple[bytes, Any, Any]] = []
    with torch.inference_mode():
        for start in range(0, len(rows), size):
            chunk = [rows[i] for i in range(start, min(start + size, len(rows)))]
            batch = collate(chunk)
            if task == "asr":
                texts = _transcribe(params, model, processor, batch["input_features"].to(device))
                predictions += texts
                references += [row["reference"] for row in chunk]
                continue
            logits = model(pixel_values=batch["pixel_values"].to(device)).logits
            if task == "image_cls":
                predictions += logits.argmax(-1).cpu().tolist()
                references += batch["labels"].tolist()
                continue
            logits = torch.nn.functional.interpolate(
                logits.float(), size=batch["labels"].shape[-2:], mode="bilinear", align_corners=False
            )
            for row, pred, ref in zip(chunk, logits.argmax(1).cpu().numpy(), batch["labels"].numpy()):
                counts += confusion(pred, ref, len(names or []), IGNORE_INDEX)
                table.append(_mask_row(row["source"], pred, ref, names))
                if len(shown) < SHOWN:
                    shown.append((row["image_bytes"], pred, ref))
    if task == "semantic_seg":
        metrics = scores(counts) if "mean_iou" in params.eval.metrics else {}
        figure = _mask_figure(shown, names)
    else:
        metrics = compute_metrics(params.eval.metrics, task, predictions, references, names)
        table = [
            _row(task, rows[k]["source"], p, r, names)
            for k, (p, r) in enumerate(zip(predictions, references))
        ]
        figure = _class_figure(rows, predictions, references, names) if task == "image_cls" else None
    return EvalResult(metrics=metrics, predictions=table, figure=figure)


def _transcribe(params: FinetuneParams, model: Any, processor: Any, features: torch.Tensor) -> list[str]:
    generated = model.generate(
        input_features=features,
        max_new_tokens=params.eval.max_new_tokens,
        num_beams=params.eval.num_beams,
        do_sample=False,
        **generation_language(params),
    )
    texts = processor.tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [text.strip() for text in texts]


def _name(names: list[str] | None, i: int) -> str:
    return names[i] if names and 0 <= i < len(names) else str(i)


def _row(task: str, source: str, pred: Any, ref: Any, names: list[str] | None) -> dict[str, Any]:
    if task == "image_cls":
        return {
            "input": source,
            "reference": _name(names, ref),
            "prediction": _name(names, pred),
            "correct": pred == ref,
        }
    return {"input": source, "reference": ref, "prediction": pred, "correct": pred.strip() == ref.strip()}


def _mask_row(source: str, pred: np.ndarray, ref: np.ndarray, names: list[str] | None) -> dict[str, Any]:
    """The classes each mask holds, and the pixel accuracy of the prediction (scored pixels only)."""
    scored = ref != IGNORE_INDEX
    accuracy = float((pred[scored] == ref[scored]).mean()) if scored.any() else 0.0
    return {
        "input": source,
        "reference": " ".join(_name(names, int(c)) for c in np.unique(ref[scored])),
        "prediction": " ".join(_name(names, int(c)) for c in np.unique(pred)),
        "pixel_accuracy": round(accuracy, 4),
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    _pyplot().close(fig)
    return buf.getvalue()


def _class_figure(
    rows: Any, predictions: list[int], references: list[int], names: list[str] | None
) -> bytes | None:
    """The first images, each titled with its predicted and true class (green: right, red: wrong)."""
    count = min(SHOWN, len(predictions))
    if not count:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, count, figsize=(2.2 * count, 2.6), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.imshow(np.asarray(load_image({"bytes": rows[k]["image_bytes"]}, None)))
        right = predictions[k] == references[k]
        title = f"pred: {_name(names, predictions[k])}\ntrue: {_name(names, references[k])}"
        ax.set_title(title, fontsize=8, color="green" if right else "red")
        ax.axis("off")
    return _png(fig)


def _mask_figure(shown: list[tuple[bytes, Any, Any]], names: list[str] | None) -> bytes | None:
    """Per row: the image, the true mask over it, the predicted mask over it (ignored pixels clear)."""
    if not shown:
        return None
    plt = _pyplot()
    top = max(len(names or []) - 1, 1)
    fig, axes = plt.subplots(len(shown), 3, figsize=(6.6, 2.2 * len(shown)), squeeze=False)
    for row_axes, (image_bytes, pred, ref) in zip(axes, shown):
        height, width = ref.shape
        image = np.asarray(load_image({"bytes": image_bytes}, None).resize((width, height)))
        for ax, title, mask in (
            (row_axes[0], "image", None),
            (row_axes[1], "true mask", np.ma.masked_equal(ref, IGNORE_INDEX)),
            (row_axes[2], "predicted mask", pred),
        ):
            ax.imshow(image)
            if mask is not None:
                ax.imshow(mask, cmap="tab20", vmin=0, vmax=top, alpha=0.5, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    return _png(fig)
