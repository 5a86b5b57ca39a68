"""Training generative models: the loss counts target tokens, packing changes nothing but speed, the
chat mask really masks, and a checkpoint never resumes on other data."""

from __future__ import annotations

import os
import random
import string
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback, TrainingArguments

from flows.finetune import run_key
from flows.params import FinetuneParams
from flows.steps.data import tokenize
from flows.steps.train import train
from flows.steps.trainer import (
    PackingCollator,
    TokenMeanTrainer,
    check_packing,
    data_collator,
    target_tokens,
    token_loss_sum,
)
from peftcore import LoraConfig, get_peft_model
from tests import tiny
from tests.flows import fixtures


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fixtures.model_dir(tmp_path_factory.mktemp("models"), "chat")


def _examples(n: int, seed: int = 0) -> list[dict[str, list[int]]]:
    """Examples of different lengths whose completions differ in length (prompt tokens are -100)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(3, 90) for _ in range(rng.randrange(2, 9))]
        completion = [rng.randrange(3, 90) for _ in range(rng.randrange(1, 12))]
        out.append({"input_ids": prompt + completion, "labels": [-100] * len(prompt) + completion})
    return out


def _lora(model: Any) -> Any:
    config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False)
    return get_peft_model(model, config)


# -- packing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_packed_batch_has_the_loss_of_the_same_examples_unpacked(arch: str) -> None:
    model = _lora(tiny.build(arch)).eval()
    examples = _examples(6)
    tokenizer = fixtures.bytelevel_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    padded = data_collator("causal_lm", tokenizer, model)([dict(e) for e in examples])
    packed = PackingCollator(tokenizer.pad_token_id)([dict(e) for e in examples])
    assert packed["input_ids"].shape[0] < len(examples)  # fewer rows...
    assert padded["input_ids"].numel() > packed["input_ids"].numel()  # ...and less padding
    with torch.no_grad():
        logits = model(**padded).logits
        unpacked_loss = token_loss_sum(logits, padded["labels"], True) / target_tokens(padded["labels"], True)
        inputs = {k: v for k, v in packed.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits
        packed_loss = token_loss_sum(logits, packed["labels"], True) / target_tokens(packed["labels"], True)
    assert target_tokens(packed["labels"], True) == target_tokens(padded["labels"], True)
    assert abs(packed_loss.item() - unpacked_loss.item()) < 1e-5
    check_packing(model)  # and the probe the train step runs agrees


def test_packed_rows_restart_positions_and_pad_only_their_ends() -> None:
    examples = [
        {"input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100, -100, 7, 8, 9, 10]},
        {"input_ids": [11, 12, 13], "labels": [-100, 12, 13]},
        {"input_ids": [14, 15], "labels": [14, 15]},
        {"input_ids": [16, 17, 18, 19], "labels": [-100, 17, 18, 19]},
    ]
    batch = PackingCollator(pad_token_id=0)(examples)
    # Best-fit decreasing into rows of at most 6 tokens (the longest example): [6], [4 + 2], [3].
    assert batch["input_ids"].tolist() == [
        [5, 6, 7, 8, 9, 10],
        [16, 17, 18, 19, 14, 15],
        [11, 12, 13, 0, 0, 0],
    ]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    # The first token of every example is no target (it would be predicted from another example).
    assert batch["labels"].tolist() == [
        [-100, -100, 7, 8, 9, 10],
        [-100, 17, 18, 19, -100, 15],
        [-100, 12, 13, -100, -100, -100],
    ]


def test_packing_is_refused_for_a_model_whose_attention_crosses_examples() -> None:
    # OPT derives positions from the attention mask, so a packed row is one long sequence to it.
    with pytest.raises(ValueError, match=r"data\.packing: this model \(opt\) lets packed examples attend"):
        check_packing(_lora(tiny.build("opt")))


# -- the loss over an accumulated batch -------------------------------------------------------------------
class _Grads(TrainerCallback):
    """The adapter's gradients just before the first optimizer step, and the logged losses."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}
        self.losses: list[float] = []

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        if not self.grads:
            self.grads = {
                n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None
            }

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def _first_step(tmp_path: Path, batch: int, accumulation: int, per_token: bool) -> _Grads:
    from transformers import Trainer

    torch.manual_seed(0)
    model = _lora(tiny.build("llama"))
    model.train()
    tokenizer = fixtures.bytelevel_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    args = TrainingArguments(
        output_dir=str(tmp_path / f"b{batch}x{accumulation}{per_token}"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1e-3,
        max_grad_norm=0.0,  # compare raw gradients
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        seed=0,
        data_seed=0,
        save_strategy="no",
        disable_tqdm=True,
    )
    seen = _Grads()
    common: dict[str, Any] = {
        "model": model,
        "args": args,
        "train_dataset": Dataset.from_list(_examples(8, seed=1)),
        "data_collator": data_collator("causal_lm", tokenizer, model),
        "callbacks": [seen],
    }
    if per_token:
        TokenMeanTrainer(**common, causal=True).train()
    else:  # the Trainer's default for a model returning a mean loss per micro-batch
        trainer = Trainer(**common)
        trainer.model_accepts_loss_kwargs = False
        trainer.train()
    return seen


def _gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_gradient_accumulation_gives_the_update_of_the_whole_batch(tmp_path: Path) -> None:
    whole = _first_step(tmp_path, batch=8, accumulation=1, per_token=True)
    accumulated = _first_step(tmp_path, batch=2, accumulation=4, per_token=True)
    assert _gap(whole.grads, accumulated.grads) < 1e-6
    assert abs(whole.losses[0] - accumulated.losses[0]) < 1e-6
    # The loss is the mean over the 8 examples' target tokens, whatever their split into micro-batches.
    examples = _examples(8, seed=1)
    n_targets = sum(sum(t != -100 for t in e["labels"][1:]) for e in examples)
    assert n_targets > 8  # completions of different lengths
    # A mean per micro-batch averaged over micro-batches weighs short completions more: not the same.
    naive = _first_step(tmp_path, batch=2, accumulation=4, per_token=False)
    assert _gap(whole.grads, naive.grads) > 1e-4


# -- the chat mask ---------------------------------------------------------------------------------------
def _noisy_chats(n: int) -> list[dict[str, Any]]:
    """User turns of random letters, always the same short answer."""
    rng = random.Random(0)
    return [
        {
            "messages": [
                {"role": "user", "content": "".join(rng.choices(string.ascii_lowercase, k=24))},
                {"role": "assistant", "content": "noted"},
            ]
        }
        for _ in range(n)
    ]


@pytest.mark.slow
def test_training_on_assistant_turns_learns_what_training_on_all_tokens_cannot(
    tmp_path: Path, chat_model: str
) -> None:
    train_file = fixtures.write_jsonl(tmp_path / "chats.jsonl", _noisy_chats(48))
    final: dict[str, float] = {}
    for train_on in ("assistant", "all"):
        params = FinetuneParams.model_validate(
            {
                "model": {"name_or_path": chat_model, "task": "causal_lm"},
                "data": {
                    "train_file": train_file,
                    "test_fraction": 0.1,
                    "format": "chat",
                    "train_on": train_on,
                },
                "peft": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"},
                "train": {"max_steps": 40, "batch_size": 8, "learning_rate": 2e-2, "logging_steps": 5},
                "eval": {"metrics": ["exact_match"]},
                "output_dir": str(tmp_path / train_on),
            }
        )
        data = tokenize(params, str(tmp_path / train_on / "cache"))
        losses: list[float] = []

        def keep(step: int, log: dict[str, float], into: list[float] = losses) -> None:
            into.extend([log["loss"]] if "loss" in log else [])

        train(params, data, str(tmp_path / train_on / "run"), on_log=keep)
        final[train_on] = losses[-1]
    # Random letters cannot be predicted (ln 26 ≈ 3.3 nats each), the fixed answer can: only a loss
    # that ignores the user turns gets near zero.
    assert final["assistant"] < 0.3
    assert final["all"] > 1.0
    assert final["assistant"] < final["all"] / 5


# -- checkpoints and data ------------------------------------------------------------------------------
def test_a_checkpoint_is_never_resumed_on_other_data(tmp_path: Path, chat_model: str) -> None:
    chats = _noisy_chats(12)
    train_file = fixtures.write_jsonl(tmp_path / "chats.jsonl", chats)
    params = FinetuneParams.model_validate(
        {
            "model": {"name_or_path": chat_model, "task": "causal_lm"},
            "data": {"train_file": train_file, "test_fraction": 0.25, "format": "chat"},
            "train": {"max_steps": 2, "batch_size": 4},
            "eval": {"metrics": ["exact_match"]},
            "output_dir": str(tmp_path / "out"),
        }
    )
    cache = str(tmp_path / "out" / "cache")
    old = tokenize(params, cache)
    # A crash left a checkpoint in the run directory of the old data (unloadable, so resuming it fails).
    old_dir = tmp_path / "out" / "runs" / run_key(params, old.fingerprint)
    (old_dir / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (old_dir / "checkpoints" / "checkpoint-1" / "trainer_state.json").write_text("{not json")
    with pytest.raises(Exception):  # noqa: B017 - the same data would resume from it
        train(params, old, str(old_dir))

    # New data at the same path: another run key, another directory, a fresh start.
    fixtures.write_jsonl(train_file, [*chats, *_noisy_chats(4)])
    new = tokenize(params, cache)
    assert new.fingerprint != old.fingerprint
    new_dir = tmp_path / "out" / "runs" / run_key(params, new.fingerprint)
    assert new_dir != old_dir
    result = train(params, new, str(new_dir))
    assert result.resumed_from is None and os.path.isdir(result.adapter_dir)


# -- perplexity -------------------------------------------------------------------------------------
def test_perplexity_is_exp_of_the_mean_loss_over_every_target_token(tmp_path: Path) -> None:
    import math

    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    from flows.steps.evaluate import score

    model_dir = fixtures.model_dir(tmp_path / "models", "causal_lm")
    texts = [{"text": "short"}, {"text": "a somewhat longer line of plain text"}, {"text": "mid length text"}]
    data_file = fixtures.write_jsonl(tmp_path / "lm.jsonl", texts)
    params = FinetuneParams.model_validate(
        {
            "model": {"name_or_path": model_dir, "task": "causal_lm"},
            "data": {"train_file": data_file, "test_file": data_file, "format": "text"},
            "train": {"eval_batch_size": 2},  # uneven batches: padding must not count
            "eval": {"metrics": ["perplexity"]},
        }
    )
    data = tokenize(params, str(tmp_path / "cache"))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    for row in load_from_disk(data.path)["test"]:
        ids = torch.tensor([row["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    result = score(params, data, model)
    assert result.metrics["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert result.predictions == []  # nothing generated: perplexity reads the model's own losses


# -- selection needs the validation split -----------------------------------------------------------------
def test_selection_without_a_validation_split_is_refused_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.steps.model as model_step

    model_dir = fixtures.model_dir(tmp_path / "models", "seq_cls")
    rows = Dataset.from_list(fixtures.rows("seq_cls", 8))
    # A saved (or Hub) dataset may have a validation split: the parameters alone cannot tell...
    from datasets import DatasetDict

    DatasetDict({"train": rows, "test": rows}).save_to_disk(tmp_path / "no-validation")
    params = FinetuneParams.model_validate(
        {
            "model": {"name_or_path": model_dir},
            "data": {"dataset": str(tmp_path / "no-validation")},
            "train": {"load_best_model_at_end": True, "metric_for_best_model": "val_accuracy"},
        }
    )
    data = tokenize(params, str(tmp_path / "cache"))
    assert data.num_validation == 0

    def must_not_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded for a run that cannot select")

    monkeypatch.setattr(model_step, "load_base_model", must_not_load)
    # ...so the train step refuses once the data shows there is none.
    with pytest.raises(
        ValueError, match=r"train\.load_best_model_at_end select on the validation split, and .* has none"
    ):
        train(params, data, str(tmp_path / "run"))


def test_early_stopping_reads_the_validation_split_not_the_test_split(tmp_path: Path) -> None:
    model_dir = fixtures.model_dir(tmp_path / "models", "seq_cls")
    rows = fixtures.rows("seq_cls", 16)
    flipped = [{**r, "label": "negative" if r["label"] == "positive" else "positive"} for r in rows[:8]]
    params = FinetuneParams.model_validate(
        {
            "model": {"name_or_path": model_dir},
            "data": {
                "train_file": fixtures.write_jsonl(tmp_path / "train.jsonl", rows),
                # Validation disagrees with train: the better the model learns, the worse val_loss gets.
                "validation_file": fixtures.write_jsonl(tmp_path / "validation.jsonl", flipped),
                # The test split agrees with train: selecting on it would never stop.
                "test_file": fixtures.write_jsonl(tmp_path / "test.jsonl", rows[:8]),
                "label_names": fixtures.LABELS,
            },
            "peft": {"r": 4, "lora_dropout": 0.0},
            "train": {
                "max_steps": 30,
                "batch_size": 8,
                "learning_rate": 5e-2,
                "eval_every": "steps",
                "eval_steps": 1,
                "early_stopping_patience": 2,
                "logging_steps": 1,
            },
        }
    )
    data = tokenize(params, str(tmp_path / "cache"))
    logs: list[tuple[int, dict[str, float]]] = []
    result = train(params, data, str(tmp_path / "run"), on_log=lambda step, log: logs.append((step, log)))
    val = [(step, log["val_loss"]) for step, log in logs if "val_loss" in log]
    assert result.global_step < 30 and len(val) == result.global_step
    assert val[-1][1] > val[0][1]  # it stopped because validation got worse
    assert not any(key.startswith("eval_") for _, log in logs for key in log)
