"""Scoring image and speech adapters: predictions, metrics and the report figure.

- image_cls: the argmax class of each image; accuracy / precision / recall / f1 on class ids.
- semantic_seg: the logits (SegFormer: a quarter of the input size) upsampled bilinearly to the
  mask's size, the argmax class per pixel; `mean_iou` over the split (pixels marked 255 not scored).
- asr: `generate` from the log-mel features (greedy unless eval.num_beams > 1), decoded without
  special tokens; wer / cer against the reference transcripts.

The table has one row per example (input: the file or row it came from). Image tasks also draw the
first rows that kept a preview: each image titled with its predicted and true class, or, for
segmentation, the image, the true mask and the predicted mask over it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from flows.metrics import compute_metrics
from flows.params import FinetuneParams
from flows.steps import EvalResult, TokenizedData
from flows.steps.trainer import ImageCollator, SpeechCollator


def score_media(params: FinetuneParams, data: TokenizedData, model: Any, rows: Any) -> EvalResult:
    task, names = params.model.task, data.label_names
    device = next(model.parameters()).device
    size = params.train.eval_batch_size
    predictions: list[Any] = []
    references: list[Any] = []
    with torch.inference_mode():
        for start in range(0, len(rows), size):
            chunk = [rows[i] for i in range(start, min(start + size, len(rows)))]
            if task == "asr":
                predictions += _transcribe(params, model, chunk, device)
                references += [row["reference"] for row in chunk]
                continue
            batch = ImageCollator()(chunk)
            logits = model(pixel_values=batch["pixel_values"].to(device)).logits
            if task == "semantic_seg":
                logits = torch.nn.functional.interpolate(
                    logits.float(), size=batch["labels"].shape[-2:], mode="bilinear", align_corners=False
                )
            ids = logits.argmax(1 if task == "semantic_seg" else -1).cpu()
            predictions += ids.tolist() if task == "image_cls" else [m.numpy() for m in ids]
            references += (
                batch["labels"].tolist() if task == "image_cls" else [m.numpy() for m in batch["labels"]]
            )
    if task == "semantic_seg":
        flat_p, flat_r = (
            [m.reshape(-1).tolist() for m in predictions],
            [m.reshape(-1).tolist() for m in references],
        )
        metrics = compute_metrics(params.eval.metrics, task, flat_p, flat_r, names)
    else:
        metrics = compute_metrics(params.eval.metrics, task, predictions, references, names)
    table = _table(task, rows, predictions, references, names)
    figure = _figure(task, rows, predictions, references, names) if task != "asr" else None
    return EvalResult(metrics=metrics, predictions=table, figure=figure)


def _transcribe(params: FinetuneParams, model: Any, chunk: list[dict[str, Any]], device: Any) -> list[str]:
    from flows.steps.model import load_processor

    features = SpeechCollator(None)(chunk)["input_features"].to(device)
    generated = model.generate(
        input_features=features,
        max_new_tokens=params.eval.max_new_tokens,
        num_beams=params.eval.num_beams,
        do_sample=False,
    )
    tokenizer = load_processor(params).tokenizer
    return [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]


def _name(names: list[str] | None, i: int) -> str:
    return names[i] if names and 0 <= i < len(names) else str(i)


def _table(
    task: str, rows: Any, predictions: list[Any], references: list[Any], names: list[str] | None
) -> list[dict[str, Any]]:
    table = []
    for k, (pred, ref) in enumerate(zip(predictions, references)):
        source = rows[k]["source"]
        if task == "image_cls":
            row = {"input": source, "reference": _name(names, ref), "prediction": _name(names, pred)}
            row["correct"] = pred == ref
        elif task == "semantic_seg":
            scored = ref != 255
            accuracy = float((pred[scored] == ref[scored]).mean()) if scored.any() else 0.0
            row = {
                "input": source,
                "reference": " ".join(_name(names, int(c)) for c in np.unique(ref[scored])),
                "prediction": " ".join(_name(names, int(c)) for c in np.unique(pred)),
                "pixel_accuracy": round(accuracy, 4),
            }
        else:
            row = {
                "input": source,
                "reference": ref,
                "prediction": pred,
                "correct": pred.strip() == ref.strip(),
            }
        table.append(row)
    return table


def _figure(
    task: str, rows: Any, predictions: list[Any], references: list[Any], names: list[str] | None
) -> bytes | None:
    """PNG: the first previewed rows with predicted vs true class, or image / true / predicted masks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    shown = [k for k in range(len(predictions)) if rows[k].get("preview")][:8]
    if not shown:
        return None
    images = [np.asarray(Image.open(io.BytesIO(rows[k]["preview"])).convert("RGB")) for k in shown]
    if task == "image_cls":
        fig, axes = plt.subplots(1, len(shown), figsize=(2.2 * len(shown), 2.6), squeeze=False)
        for ax, k, image in zip(axes[0], shown, images):
            ok = predictions[k] == references[k]
            ax.imshow(image)
            ax.set_title(
                f"pred: {_name(names, predictions[k])}\ntrue: {_name(names, references[k])}",
                fontsize=8,
                color="green" if ok else "red",
            )
            ax.axis("off")
    else:
        fig, axes = plt.subplots(len(shown), 3, figsize=(6.6, 2.2 * len(shown)), squeeze=False)
        count = max(len(names or []), 2)
        for row_axes, k, image in zip(axes, shown, images):
            truth = np.ma.masked_equal(references[k], 255)
            for ax, title, mask in (
                (row_axes[0], "image", None),
                (row_axes[1], "true mask", truth),
                (row_axes[2], "predicted mask", predictions[k]),
            ):
                ax.imshow(image)
                if mask is not None:
                    ax.imshow(mask, cmap="tab20", vmin=0, vmax=count - 1, alpha=0.5, interpolation="nearest")
                ax.set_title(title, fontsize=8)
                ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
