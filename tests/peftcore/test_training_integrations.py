"""peftcore models train unchanged in the loops people actually use.

A plain PyTorch loop, Accelerate and the transformers `Trainer` all see a `PeftModel` as an ordinary
`nn.Module`, whose `state_dict()` is the whole model (as nn.Module's and HF PEFT's). The Trainer writes
adapter-only checkpoints through `peftcore.trainer.AdapterTrainer`: they must hold adapter tensors and
nothing of the frozen base, and load back with `load_state_dict`. Activation checkpointing and `generate()` must pass through to the
base model without blocking gradients or bypassing the adapter.

All models are the tiny ones from `tests/tiny.py`, on CPU, for a handful of steps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peftcore import LoraConfig, PeftModel, get_peft_model
from peftcore.trainer import AdapterTrainer
from peftcore.tuners.lora.layer import LoraLayer
from tests import tiny

transformers = pytest.importorskip("transformers")

# The Trainer writes the model's state_dict() here when the model is not a transformers/HF-peft class.
CHECKPOINT_WEIGHTS = "model.safetensors"


# -- helpers --------------------------------------------------------------------------------------
def _lora(arch: str, **overrides: Any) -> PeftModel:
    """A tiny `arch` model with a LoRA adapter on the default targets (plus the head for SEQ_CLS)."""
    kwargs: dict[str, Any] = {"task_type": tiny.TASK[arch], "r": 4, "lora_alpha": 8}
    kwargs.update(overrides)
    return get_peft_model(tiny.build(arch), LoraConfig(**kwargs))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model: nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def _is_adapter_key(key: str) -> bool:
    return ".lora_" in key or ".modules_to_save." in key


def _base_bytes(model: PeftModel) -> int:
    """Bytes of the frozen base weights (what an adapter-only checkpoint must not contain)."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)


def _assert_adapter_only_file(path: Path, model: PeftModel) -> dict[str, torch.Tensor]:
    """`path` holds exactly the model's adapter state and is far smaller than the base weights."""
    tensors = load_file(path)
    assert set(tensors) == set(model.adapter_state_dict()), f"{path} keys differ from the adapter state"
    frozen = [k for k in tensors if not _is_adapter_key(k)]
    assert not frozen, f"{path} contains frozen base weights: {frozen[:5]}"
    # Rank-4 LoRA on two projections (+ the head copy for SEQ_CLS) is ~5-6% of the tiny base with the
    # safetensors header; a checkpoint holding any full base matrix set would be far above 10%.
    assert os.path.getsize(path) < 0.10 * _base_bytes(model), (os.path.getsize(path), _base_bytes(model))
    return tensors


def _assert_state_equals(model: PeftModel, tensors: dict[str, torch.Tensor]) -> None:
    state = model.adapter_state_dict()
    assert set(state) == set(tensors)
    for key, value in tensors.items():
        assert torch.equal(state[key], value), key


def _lm_rows(n: int, length: int = 12) -> list[dict[str, torch.Tensor]]:
    """Causal LM rows with a repeating pattern, so a few steps visibly reduce the loss."""
    g = torch.Generator().manual_seed(3)
    rows = []
    for _ in range(n):
        start = int(torch.randint(3, tiny.VOCAB - 4, (1,), generator=g))
        ids = torch.tensor([start + (i % 4) for i in range(length)])
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return rows


def _training_args(output_dir: Path, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 5e-3,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 0,
        "dataloader_pin_memory": False,
    }
    kwargs.update(overrides)
    return transformers.TrainingArguments(**kwargs)


class _Recorder(transformers.TrainerCallback):
    """Records the adapter state when training begins (after any resume load) and each step's grads."""

    def __init__(self) -> None:
        self.state_at_begin: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.grads: list[dict[str, torch.Tensor | None]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module, **kwargs: Any) -> None:
        self.state_at_begin = {k: v.clone() for k, v in cast(Any, model).adapter_state_dict().items()}

    def on_pre_optimizer_step(
        self, args: Any, state: Any, control: Any, model: nn.Module, **kwargs: Any
    ) -> None:
        self.grads.append(
            {
                n: None if p.grad is None else p.grad.clone()
                for n, p in model.named_parameters()
                if p.requires_grad
            }
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps += 1


# -- 1. plain PyTorch loop ------------------------------------------------------------------------
def test_custom_loop_trains_only_adapter_params_and_merge_matches() -> None:
    model = _lora("llama", target_modules=["q_proj", "v_proj", "o_proj"])
    model.train()
    before = _snapshot(model)
    batch = tiny.inputs("llama", batch=4, length=12)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    losses = []
    for _ in range(6):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    assert losses[-1] < losses[0] - 0.05, losses
    changed = _changed(model, before)
    lora_params = {n for n in before if ".lora_" in n}
    assert changed == lora_params, sorted(changed ^ lora_params)[:5]

    model.eval()
    adapted = tiny.output(model, batch)
    merged = model.merge_and_unload()
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    # Merged W + s·BA vs unmerged x·W + s·(x·A)·B differ only by fp32 rounding order.
    torch.testing.assert_close(tiny.output(merged, batch), adapted, atol=1e-6, rtol=0)


# -- 2. Accelerate --------------------------------------------------------------------------------
def test_accelerate_trains_and_save_state_round_trips(tmp_path: Path) -> None:
    accelerate = pytest.importorskip("accelerate")
    accelerator = accelerate.Accelerator(cpu=True)
    model = _lora("llama")
    before = _snapshot(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loader = torch.utils.data.DataLoader(_lm_rows(8), batch_size=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    assert isinstance(accelerator.unwrap_model(model), PeftModel)

    model.train()
    epoch_losses = []
    for _ in range(4):
        total = 0.0
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            total += loss.item()
        epoch_losses.append(total)
    assert epoch_losses[-1] < epoch_losses[0], epoch_losses
    assert all(".lora_" in n for n in _changed(model, before))

    # save_state goes through state_dict(): the whole model, as for any module (and HF PEFT).
    accelerator.save_state(str(tmp_path / "state"))
    saved = load_file(tmp_path / "state" / CHECKPOINT_WEIGHTS)
    assert set(saved) == set(accelerator.unwrap_model(model).state_dict())
    _assert_state_equals(model, {k: v for k, v in saved.items() if _is_adapter_key(k)})
    saved = {k: v for k, v in saved.items() if _is_adapter_key(k)}

    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.zero_()
    base_before_load = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    accelerator.load_state(str(tmp_path / "state"))
    _assert_state_equals(model, saved)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, base_before_load[name]), name


# -- 3. transformers Trainer ----------------------------------------------------------------------
def _bert_dataset(n: int) -> Any:
    datasets = pytest.importorskip("datasets")
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, tiny.VOCAB, (n, 10), generator=g)
    token_type_ids = torch.zeros_like(ids)
    token_type_ids[:, 5:] = 1
    return datasets.Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": torch.ones_like(ids).tolist(),
            "token_type_ids": token_type_ids.tolist(),
            "labels": (ids[:, 1] % 3).tolist(),  # learnable from the input
            "row_id": list(range(n)),  # not a forward() argument: the Trainer must drop it
        }
    )


def test_trainer_keeps_bert_token_type_ids_and_drops_unknown_columns(tmp_path: Path) -> None:
    model = _lora("bert")
    trainer = AdapterTrainer(
        model=model, args=_training_args(tmp_path, max_steps=1), train_dataset=_bert_dataset(8)
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["token_type_ids"].sum() > 0


@pytest.mark.xfail(
    raises=ValueError,
    strict=True,
    reason="known gap: a task-less PeftModel's forward(*args, **kwargs) hides the base model's arguments, so "
    "the Trainer's remove_unused_columns drops every column (HF peft is special-cased by the Trainer)",
)
def test_trainer_keeps_columns_for_peft_model_without_task_type(tmp_path: Path) -> None:
    model = get_peft_model(tiny.build("bert"), LoraConfig(r=4, target_modules=["query", "value"]))
    assert type(model) is PeftModel
    trainer = AdapterTrainer(
        model=model, args=_training_args(tmp_path, max_steps=1), train_dataset=_bert_dataset(8)
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert {"input_ids", "token_type_ids", "labels"} <= set(batch)


def test_trainer_seq_cls_checkpoints_hold_only_adapter_and_best_model_loads(tmp_path: Path) -> None:
    model = _lora("bert")
    head = "base_model.model.classifier.modules_to_save.default.weight"
    assert head in model.state_dict()
    evals = iter(range(100))

    def first_eval_is_best(_: Any) -> dict[str, float]:
        # A metric that makes checkpoint-2 the best, so loading it visibly rewinds the final weights.
        return {"rank": -float(next(evals))}

    args = _training_args(
        tmp_path,
        max_steps=6,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="rank",
        greater_is_better=True,
    )
    trainer = AdapterTrainer(
        model=model,
        args=args,
        train_dataset=_bert_dataset(24),
        eval_dataset=_bert_dataset(8),
        compute_metrics=first_eval_is_best,
    )
    trainer.train()

    checkpoints = sorted(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in checkpoints] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    saved = {p.name: _assert_adapter_only_file(p / CHECKPOINT_WEIGHTS, model) for p in checkpoints}
    assert not torch.equal(saved["checkpoint-2"][head], saved["checkpoint-6"][head]), "head was not trained"
    assert trainer.state.best_model_checkpoint == str(checkpoints[0])
    _assert_state_equals(model, saved["checkpoint-2"])


def test_trainer_resumes_causal_lm_from_adapter_checkpoint(tmp_path: Path) -> None:
    rows = _lm_rows(16)
    first = AdapterTrainer(
        model=_lora("llama"),
        args=_training_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, learning_rate=5e-2),
        train_dataset=rows,
        eval_dataset=rows,
    )
    loss_before = first.evaluate()["eval_loss"]
    first.train()
    assert first.evaluate()["eval_loss"] < loss_before - 0.05
    for step in (2, 4):
        _assert_adapter_only_file(tmp_path / f"checkpoint-{step}" / CHECKPOINT_WEIGHTS, first.model)
    at_step_4 = load_file(tmp_path / "checkpoint-4" / CHECKPOINT_WEIGHTS)

    torch.manual_seed(123)  # a fresh adapter with different lora_A, so the resume load is observable
    fresh = _lora("llama")
    assert not torch.equal(fresh.state_dict()[next(iter(at_step_4))], next(iter(at_step_4.values())))
    recorder = _Recorder()
    second = AdapterTrainer(
        model=fresh,
        args=_training_args(tmp_path, max_steps=6, save_strategy="steps", save_steps=2, learning_rate=5e-2),
        train_dataset=rows,
        callbacks=[recorder],
    )
    second.train(resume_from_checkpoint=True)

    assert set(recorder.state_at_begin) == set(at_step_4)
    for key, value in at_step_4.items():
        assert torch.equal(recorder.state_at_begin[key], value), key
    assert recorder.steps == 2
    assert second.state.global_step == 6
    _assert_adapter_only_file(tmp_path / "checkpoint-6" / CHECKPOINT_WEIGHTS, fresh)


# -- 4. activation (gradient) checkpointing -------------------------------------------------------
def _count_forwards(model: PeftModel) -> list[int]:
    """A counter of forward calls of the first LoRA layer: checkpointing recomputes it in backward."""
    calls = [0]
    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))

    def hook(*_: Any) -> None:
        calls[0] += 1

    layer.register_forward_hook(hook)
    return calls


def _assert_all_lora_grads_nonzero(grads: dict[str, torch.Tensor | None]) -> None:
    lora = {n: g for n, g in grads.items() if ".lora_" in n}
    assert lora
    blocked = [n for n, g in lora.items() if g is None or not g.abs().sum() > 0]
    assert not blocked, f"no gradient reached {blocked[:5]}"


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_enable_lets_gradients_reach_lora(use_reentrant: bool) -> None:
    # init_lora_weights=False: B is non-zero, so lora_A gets a gradient on the first step too.
    model = _lora("llama", init_lora_weights=False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert model.is_activation_checkpointing
    calls = _count_forwards(model)
    model.train()
    batch = tiny.inputs("llama", batch=2, length=8)
    model(**batch, labels=batch["input_ids"]).loss.backward()

    assert calls[0] == 2, "the checkpointed layer was not recomputed in backward"
    _assert_all_lora_grads_nonzero({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_trainer_activation_checkpointing_flag_lets_gradients_reach_lora(tmp_path: Path) -> None:
    model = _lora("llama", init_lora_weights=False)
    calls = _count_forwards(model)
    recorder = _Recorder()
    args = _training_args(
        tmp_path,
        max_steps=2,
        save_strategy="no",
        activation_checkpointing=True,
        # Reentrant checkpointing only back-propagates into a block whose input requires grad; the
        # frozen embeddings' output does not unless the wrapper makes it.
        activation_checkpointing_kwargs={"use_reentrant": True},
    )
    trainer = AdapterTrainer(model=model, args=args, train_dataset=_lm_rows(8), callbacks=[recorder])
    trainer.train()

    assert model.is_activation_checkpointing
    assert calls[0] == 2 * 2, "the checkpointed layer was not recomputed in backward"
    assert len(recorder.grads) == 2
    for grads in recorder.grads:
        _assert_all_lora_grads_nonzero(grads)


# -- 5. generate() --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_generate_passes_through_and_matches_merged_model(arch: str) -> None:
    model = _lora(arch, init_lora_weights=False)
    batch = tiny.inputs(arch)
    gen_kwargs: dict[str, Any] = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "max_new_tokens": 6,
        "do_sample": False,
        "pad_token_id": 0,
        "return_dict_in_generate": True,
        "output_scores": True,
    }
    with torch.no_grad():
        adapted = model.generate(**gen_kwargs)
        with model.disable_adapter():
            base = model.generate(**gen_kwargs)
        merged = model.merge_and_unload().generate(**gen_kwargs)

    adapted_scores, base_scores = torch.stack(adapted.scores), torch.stack(base.scores)
    assert not torch.allclose(adapted_scores, base_scores, atol=1e-3), "generate() bypassed the adapter"
    assert torch.equal(adapted.sequences, merged.sequences)
    # fp32 rounding-order difference of merged vs unmerged weights, accumulated over T5's layers; its scores
    # reach ~3.4, where 5e-6 is about 20 ulps.
    torch.testing.assert_close(torch.stack(merged.scores), adapted_scores, atol=5e-6, rtol=1e-6)


def test_state_dict_is_the_whole_model_and_adapter_state_dict_the_adapters(tmp_path: Path) -> None:
    """torch.save(model.state_dict()) keeps the base (it used to hold the adapters only)."""
    model = _lora("llama")
    state = model.state_dict()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen <= set(state)  # the base is in it
    adapters = model.adapter_state_dict()
    assert set(adapters) < set(state) and all(_is_adapter_key(k) for k in adapters)
    torch.save(state, tmp_path / "whole.pt")
    fresh = _lora("llama")
    fresh.load_state_dict(torch.load(tmp_path / "whole.pt", weights_only=True))
    for key, value in state.items():
        assert torch.equal(fresh.state_dict()[key], value), key
