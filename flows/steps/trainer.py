"""What the train step hands the transformers `Trainer`: batch collators, packing, the LM loss.

**Loss of generative tasks.** The mean over *target tokens* of the whole optimizer step: every
micro-batch of a gradient-accumulation step, on every rank, divided by one count of target tokens

    loss = Σ_micro-batches Σ_target tokens  -log p(token)  /  N_targets(step)

so accumulation 4 × batch 2 is the same update as batch 8, whatever the completion lengths (the
Trainer's default, a mean per micro-batch averaged over micro-batches, weights a short completion's
tokens more). `TokenMeanTrainer.get_batch_samples` counts the targets of the step (gathered over
ranks); `compute_loss` divides each micro-batch's summed loss by that count.

**Packing** (`data.packing`). `PackingCollator` joins a batch's examples into a few rows, each no
longer than the batch's longest example: position ids restart at 0 for each example, so the model's
attention keeps examples apart (transformers builds a block-diagonal causal mask from the position
ids when no attention mask is given), and the first token of each example is no target, so no
example predicts its neighbour's first token. The loss is then the same as the unpacked batch's.
`check_packing` proves this for the loaded model before training: an architecture that ignores
position ids for masking is refused.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from peftcore.trainer import AdapterCheckpointsMixin, AdapterTrainer

IGNORE = -100


def data_collator(
    task: str,
    tokenizer: Any,
    model: Any,
    packing: bool = False,
    augment: bool = False,
    processor: Any = None,
    resample: bool = True,
) -> Any:
    """The batch collator of `task`; image and speech tasks run `processor` (the model's own) on
    each batch, with random flips when `augment` (training only)."""
    from transformers import (
        DataCollatorForSeq2Seq,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
    )

    if task in ("image_cls", "semantic_seg", "asr"):
        from flows.steps.data.media_encode import MediaCollator, float_dtype

        start = getattr(getattr(model, "config", None), "decoder_start_token_id", None)
        return MediaCollator(
            task, processor, resample=resample, flip=augment, start_token=start, dtype=float_dtype(model)
        )
    if task == "seq_cls":
        return DataCollatorWithPadding(tokenizer)
    if task == "token_cls":
        return DataCollatorForTokenClassification(tokenizer)
    if packing:
        return PackingCollator(tokenizer.pad_token_id or 0)
    # Causal and seq2seq: pad inputs with the pad token and labels with -100 (ignored by the loss).
    return DataCollatorForSeq2Seq(
        tokenizer, model=model if task == "seq2seq_lm" else None, label_pad_token_id=IGNORE
    )


class AugmentingTrainer(AdapterTrainer):
    """Trains with the augmenting collator and evaluates with the plain one (validation images are
    never flipped): the Trainer itself has one collator for both."""

    def __init__(self, *args: Any, eval_collator: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eval_collator = eval_collator

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        training_collator = self.data_collator
        self.data_collator = self.eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = training_collator


class PackingCollator:
    """A batch of causal-LM examples packed into as few rows as possible, position ids restarting.

    Rows hold at most as many tokens as the batch's longest example, filled best-fit decreasing:
    padding is left only at the end of some rows (each of those tails is a sequence of its own,
    unlabelled). Capping rows keeps attention, quadratic in the row length where the attention
    kernel sees a dense block-diagonal mask, no dearer than the padded batch's.
    """

    def __init__(self, pad_token_id: int = 0) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        examples = [(list(f["input_ids"]), list(f["labels"])) for f in features]
        capacity = max(len(ids) for ids, _ in examples)
        rows: list[list[tuple[list[int], list[int]]]] = []
        room: list[int] = []
        for ids, labels in sorted(examples, key=lambda e: -len(e[0])):
            fits = [i for i, free in enumerate(room) if free >= len(ids)]
            if fits:
                best = min(fits, key=lambda i: room[i])
                rows[best].append((ids, labels))
                room[best] -= len(ids)
            else:
                rows.append([(ids, labels)])
                room.append(capacity - len(ids))
        width = max(capacity - free for free in room)
        out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
        for row in rows:
            row_ids: list[int] = []
            row_labels: list[int] = []
            positions: list[int] = []
            for example_ids, example_labels in row:
                row_ids += example_ids
                row_labels += [IGNORE, *example_labels[1:]]  # the first token follows another example
                positions += range(len(example_ids))
            tail = width - len(row_ids)
            out["input_ids"].append(row_ids + [self.pad_token_id] * tail)
            out["labels"].append(row_labels + [IGNORE] * tail)
            out["position_ids"].append(positions + list(range(tail)))
        return {key: torch.tensor(value) for key, value in out.items()}


def check_packing(model: Any) -> None:
    """Refuse packing for a model that does not keep packed examples apart.

    Two probes on the loaded model: an example packed after two different neighbours must get the
    same logits (attention does not cross examples: exact up to kernel noise, in any precision), and
    those logits must be the example's own, run alone (positions restart), within the precision of
    the logits' dtype.
    """
    first, other, second = torch.arange(3, 8), torch.arange(20, 25), torch.arange(9, 16)
    device = next(model.parameters()).device
    positions = torch.cat([torch.arange(len(first)), torch.arange(len(second))])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(input_ids=second[None].to(device), use_cache=False).logits[0]
            rows = torch.stack([torch.cat([first, second]), torch.cat([other, second])]).to(device)
            packed = model(input_ids=rows, position_ids=positions.expand(2, -1).to(device), use_cache=False)
            tail = packed.logits[:, len(first) :].float()
    finally:
        model.train(was_training)
    scale = max(alone.float().abs().max().item(), 1.0)
    crossing = (tail[0] - tail[1]).abs().max().item() / scale
    drift = (tail[0] - alone.float()).abs().max().item() / scale
    precision = max(1e-4, 4 * torch.finfo(alone.dtype).eps)  # bf16: 3e-2 of the largest logit
    if crossing > 1e-3 or drift > precision:
        name = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise ValueError(
            f"data.packing: this model ({name}) lets packed examples attend to each other (an example's "
            f"logits move by {max(crossing, drift):.3g} of the largest logit when packed), so packing would "
            "corrupt training; set data.packing=false"
        )


def target_tokens(labels: torch.Tensor, shift: bool) -> torch.Tensor:
    """How many positions of `labels` the loss counts (causal LMs predict labels[1:])."""
    return (labels[..., 1:] if shift else labels).ne(IGNORE).sum()


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor, shift: bool) -> torch.Tensor:
    """Summed cross-entropy over the target tokens (fp32 whatever the logits' dtype)."""
    if shift:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1).to(logits.device),
        ignore_index=IGNORE,
        reduction="sum",
    )


class TokenMeanTrainer(AdapterCheckpointsMixin, Trainer):
    """A `Trainer` whose generative loss is the mean over the target tokens of each optimizer step."""

    # compute_loss below divides by the step's token count: no further division by accumulation steps.
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, causal: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.causal = causal
        # Never pass num_items_in_batch into the model (our loss uses it), nor let the Trainer rescale.
        self.model_accepts_loss_kwargs = False

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list[Any], Any]:
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        count = sum(
            (target_tokens(b["labels"], self.causal) for b in batches if "labels" in b), torch.tensor(0)
        )
        count = count.to(device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return batches, count

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        labels = inputs["labels"]
        if self.causal:  # no cache: a training pass needs none, and packing needs its absence
            inputs = {k: v for k, v in inputs.items() if k != "labels"}
            outputs = model(**inputs, use_cache=False)
        else:  # seq2seq models derive decoder inputs from the labels
            outputs = model(**inputs)
        total = token_loss_sum(outputs.logits, labels, self.causal)
        if num_items_in_batch is None:  # evaluation: this batch's own mean
            loss = total / target_tokens(labels, self.causal).clamp(min=1)
        else:
            # DDP averages gradients over ranks; the count is already the global one.
            loss = total / torch.as_tensor(num_items_in_batch).clamp(min=1) * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
