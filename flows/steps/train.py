"""Train step: the transformers `Trainer` on a peftcore model, CPU or GPU, resumable.

- Checkpoints are adapter-only (the trainers mix in peftcore's AdapterCheckpointsMixin) and live in
  `<run_dir>/checkpoints/`; rerunning the same run directory resumes from the newest one.
- After a successful run the final adapter is saved to `<run_dir>/adapter/` (HF PEFT format, with the
  base model's Hub id as `base_model_name_or_path`; a local base without `model.hub_id` is recorded
  by its local path, as `save_pretrained` does, which the publish step refuses) and the checkpoints
  are removed, so a rerun of a finished run trains afresh instead of silently reusing the old result.
- Evaluations during training (`train.eval_every`) read the validation split only, and are named
  `val_<metric>` / `val_loss`; without a validation split there are none. Early stopping and
  `load_best_model_at_end` follow `train.metric_for_best_model` on it, and refuse to start without it
  (`check_selection`). The test split is never seen here.
- Generative tasks train with `TokenMeanTrainer` (flows.steps.trainer): the loss is the mean over
  the target tokens of each optimizer step; `data.packing` packs batches (checked on the model first).
- `on_log(step, logs)` receives every Trainer log (train loss, validation metrics) as it happens; the
  flow uses it to stream metrics to MLflow without this module knowing about MLflow. A resumed run
  first receives the logs its checkpoint recorded, so the logs of a finished training always cover
  steps 1..N, whichever attempt trained them.
- `on_end()` runs once training is done, before the adapter is saved and the checkpoints are removed
  (the flow sends metrics held back by a tracking outage there): if it raises, the checkpoints stay
  and rerunning the run resumes from the newest, the last step's included.
- Under `accelerate launch` (DDP, one process per device; see flows.distributed.launch) every rank runs this same
  function. Only the world's process zero forwards logs, saves the adapter and removes the checkpoints;
  the figures it returns are rank 0's (the logged losses are already averaged over ranks by the Trainer).
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from flows.params import MEDIA_TASKS, FinetuneParams
from flows.steps import TokenizedData, TrainResult
from flows.steps.trainer import AugmentingTrainer, TokenMeanTrainer, check_packing, data_collator
from peftcore.trainer import AdapterTrainer

LogFn = Callable[[int, dict[str, float]], None]
EndFn = Callable[[], None]


def pick_precision(params: FinetuneParams) -> tuple[str, str]:
    """(device, precision): bf16 on a GPU that supports it when precision is auto, else fp32."""
    # `accelerate launch` with `use_cpu: true` asks for CPU processes even where a GPU exists.
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    device = "cuda" if torch.cuda.is_available() and not forced_cpu else "cpu"
    precision = params.train.precision
    if precision == "auto":
        precision = "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision in ("bf16", "fp16") and device == "cpu":
        raise ValueError(f"train.precision={precision!r} needs a CUDA GPU; use 'auto' or 'fp32' on CPU")
    return device, precision


def classification_metrics(
    params: FinetuneParams, label_names: list[str] | None
) -> Callable[[Any], dict[str, float]] | None:
    """Per-evaluation metrics (val_<name>) for sequence classification, computed exactly as the final
    evaluation computes them; other tasks log val_loss during training."""
    if params.model.task not in ("seq_cls", "image_cls"):
        return None
    from flows.metrics import compute_metrics

    def compute(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        ids = logits.argmax(-1).tolist()
        task = params.model.task
        return compute_metrics(params.eval.metrics, task, ids, pred.label_ids.tolist(), label_names)

    return compute


def check_selection(params: FinetuneParams, data: TokenizedData) -> None:
    """Selection features need the validation split: refuse them before any model loads."""
    selecting = params.train.selection_features()
    if selecting and data.num_validation == 0:
        raise ValueError(
            f"{' and '.join(selecting)} select on the validation split, and {data.source} has none: set "
            f"data.validation_fraction, data.validation_file, or name an existing split in "
            f"data.validation_split (is {params.data.validation_split!r}); the test split is never used for selection"
        )


def planned_steps(params: FinetuneParams, train_rows: int) -> int:
    """The optimizer steps the Trainer will take on one process (what a rank schedule needs)."""
    t = params.train
    if t.max_steps > 0:
        return t.max_steps
    per_epoch = max(math.ceil(train_rows / t.batch_size) // t.gradient_accumulation_steps, 1)
    return max(math.ceil(t.epochs * per_epoch), 1)


def train(
    params: FinetuneParams,
    data: TokenizedData,
    run_dir: str,
    on_log: LogFn | None = None,
    on_end: EndFn | None = None,
) -> TrainResult:
    """Fine-tune the adapter described by `params` on `data`; returns where the adapter is and figures."""
    from datasets import load_from_disk
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from flows.steps.model import (
        base_model_hub_id,
        build_peft_config,
        load_base_model,
        load_processor,
        load_tokenizer,
    )
    from peftcore import get_peft_model

    check_selection(params, data)
    device, precision = pick_precision(params)
    if params.train.num_threads:
        torch.set_num_threads(params.train.num_threads)
    set_seed(params.train.seed)
    media = params.model.task in MEDIA_TASKS
    tokenizer = None if media else load_tokenizer(params)
    splits = load_from_disk(data.path)
    peft_config = build_peft_config(params, total_steps=planned_steps(params, len(splits["train"])))
    base = load_base_model(params, data.label_names)
    if params.model.quantization != "none":  # QLoRA: frozen k-bit base, its small float parts in fp32
        from peftcore import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=params.train.gradient_checkpointing
        )
    model = get_peft_model(base, peft_config)
    if params.data.packing:
        check_packing(model)

    ckpt_dir = os.path.join(run_dir, "checkpoints")
    adapter_dir = os.path.join(run_dir, "adapter")
    # No directory is created here: under DDP every rank runs this, and only rank 0 may write.
    resume = get_last_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
    t = params.train
    # Evaluations during training read the validation split only; without one there are none.
    evaluating = t.eval_every != "no" and "validation" in splits
    selecting = bool(t.selection_features())
    args = TrainingArguments(
        output_dir=ckpt_dir,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=params.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        activation_checkpointing=t.gradient_checkpointing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        seed=t.seed,
        data_seed=t.seed,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        eval_strategy=t.eval_every if evaluating else "no",
        eval_steps=t.eval_steps if t.eval_every == "steps" else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        logging_steps=t.logging_steps,
        load_best_model_at_end=selecting,
        # The Trainer names validation metrics eval_<name>; ours are val_<name> (see _LogForwarder).
        metric_for_best_model=t.metric_for_best_model.removeprefix("val_") if selecting else None,
        report_to="none",
        # Media tasks' wrapped models take **kwargs (no task_type), so the Trainer cannot tell their
        # input columns; the collators pick them.
        remove_unused_columns=not media,
        label_names=["labels"] if media else None,
        dataloader_num_workers=0,
        # DDP: every trainable (adapter) parameter takes part in every forward; searching the graph for
        # unused ones costs a traversal per step and breaks with gradient checkpointing.
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )
    callbacks: list[Any] = [_LogForwarder(on_log)] if on_log else []
    if t.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    task = params.model.task
    common: dict[str, Any] = {
        "model": model,
        "args": args,
        "train_dataset": splits["train"],
        "eval_dataset": splits["validation"] if evaluating else None,
        "data_collator": data_collator(
            task,
            tokenizer,
            model,
            packing=params.data.packing,
            augment=params.data.augment,
            processor=load_processor(params) if media else None,
            resample=params.data.resample,
        ),
        "compute_metrics": classification_metrics(params, data.label_names) if evaluating else None,
        "callbacks": callbacks,
    }
    if task in ("causal_lm", "seq2seq_lm", "asr"):
        trainer: Trainer = TokenMeanTrainer(**common, causal=task == "causal_lm")
    else:
        if params.data.augment:  # flips for training batches only, never for the validation split
            plain = data_collator(task, tokenizer, model, processor=common["data_collator"].processor)
            trainer = AugmentingTrainer(**common, eval_collator=plain)
        else:
            trainer = AdapterTrainer(**common)
        # The Trainer guesses from `forward(**kwargs)` that the model normalises its loss by the
        # `num_items_in_batch` it passes, and then skips the division by the accumulation steps and
        # multiplies the loss by the number of processes. Classification heads ignore that argument
        # and return a mean, so the guess would double the gradients and the logged loss per extra
        # process or accumulation step: a mean per micro-batch, averaged over steps and ranks.
        trainer.model_accepts_loss_kwargs = False
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    finished = _finished_state(resume)
    if finished is None:
        output = trainer.train(resume_from_checkpoint=resume)
        global_step, train_loss = int(output.global_step), float(output.training_loss)
    else:
        # Trained to the last step by an attempt that failed afterwards (see on_end). Resumed there, the
        # Trainer would take one step more than asked, so the checkpoint's weights and state are restored.
        _restore(trainer, model, finished, str(resume), selecting)
        global_step = int(finished.global_step)
        losses = [h["loss"] for h in finished.log_history if "loss" in h]
        train_loss = sum(losses) / len(losses) if losses else float("nan")
    runtime = time.perf_counter() - start

    # Under FSDP each rank holds shards: gather the full state dict (a collective, so every rank calls
    # it; rank 0 gets the tensors) and save the adapter from it.
    gathered = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if trainer.is_world_process_zero():
        if on_end is not None:
            on_end()
        model.peft_config["default"].base_model_name_or_path = base_model_hub_id(params.model)
        model.save_pretrained(adapter_dir, state_dict=gathered)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    # Every rank returns only once the adapter is on disk (a no-op in a single process).
    trainer.accelerator.wait_for_everyone()
    epochs_done = float(trainer.state.epoch or 0.0)
    return TrainResult(
        adapter_dir=adapter_dir,
        global_step=global_step,
        train_loss=train_loss,
        train_runtime_s=runtime,
        # Nothing trained in this attempt (a restored, finished checkpoint): no throughput to report.
        train_tokens_per_s=data.num_train_tokens * epochs_done / runtime
        if runtime > 0 and finished is None
        else 0.0,
        peak_memory_mb=_peak_memory_mb(device),
        device=device,
        log_history=list(trainer.state.log_history),
        resumed_from=resume,
        strategy=str(
            getattr(trainer.accelerator.distributed_type, "value", trainer.accelerator.distributed_type)
        ),
    )


def _finished_state(checkpoint: str | None) -> Any:
    """The Trainer state saved in `checkpoint` when it is the training's last step, else None."""
    from transformers import TrainerState

    if checkpoint is None:
        return None
    state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
    return state if state.max_steps and state.global_step >= state.max_steps else None


def _restore(trainer: Trainer, model: Any, state: Any, checkpoint: str, selecting: bool) -> None:
    """Give `trainer` the finished training of `checkpoint`: its state and its adapter weights (those of
    the best checkpoint when selecting on validation, as `load_best_model_at_end` would)."""
    from safetensors.torch import load_file

    best = state.best_model_checkpoint
    weights_dir = best if selecting and best and os.path.isdir(best) else checkpoint
    loaded = model.load_state_dict(load_file(os.path.join(weights_dir, "model.safetensors")), strict=False)
    if loaded.unexpected_keys:
        raise RuntimeError(
            f"checkpoint {weights_dir} does not fit this model (unexpected keys {loaded.unexpected_keys[:5]}); "
            "remove it to train afresh"
        )
    trainer.state = state
    # What a resumed training does first: the callbacks see the restored history (the logs are replayed).
    trainer.control = trainer.callback_handler.on_train_begin(trainer.args, trainer.state, trainer.control)


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    # Linux reports ru_maxrss in KiB: the process's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _LogForwarder(TrainerCallback):
    """Hands each Trainer log (numbers only) to `on_log(step, logs)`, from the world's process zero only."""

    def __init__(self, on_log: LogFn) -> None:
        self._forward = on_log

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:  # type: ignore[override]
        # Resuming: the checkpoint's history holds the logs of the steps trained before it.
        if state.is_world_process_zero:
            for logs in state.log_history:
                self._send(int(logs.get("step", 0)), logs)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:  # type: ignore[override]
        if logs and state.is_world_process_zero:
            self._send(int(state.global_step), logs)

    def _send(self, step: int, logs: dict[str, Any]) -> None:
        numbers = {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and k != "step"}
        # The Trainer evaluates the validation split under its own "eval_" prefix.
        self._forward(step, {_val_name(k): v for k, v in numbers.items()})


def _val_name(key: str) -> str:
    return "val_" + key.removeprefix("eval_") if key.startswith("eval_") else key
