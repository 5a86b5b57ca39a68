"""AdaLoRA against Hugging Face `peft` (a test-only oracle): the same steps on the same model give the
same losses (orthogonality penalty included), the same rank pattern and the same files; each library
loads the other's pruned adapter with identical outputs. Then what peftcore adds: the schedule runs
from the optimizer hook (a plain loop or the transformers Trainer, no user code), and the refusals."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import peftcore
from tests import tiny

SCHEDULE = {
    "init_r": 6,
    "target_r": 2,
    "total_step": 10,
    "tinit": 2,
    "tfinal": 3,
    "deltaT": 2,
    "lora_alpha": 16,
}


def base_model() -> nn.Module:
    return tiny.build("llama")  # no dropout: training steps are deterministic


def batches(steps: int) -> list[torch.Tensor]:
    return [
        torch.randint(3, tiny.VOCAB, (2, 7), generator=torch.Generator().manual_seed(s)) for s in range(steps)
    ]


def train(model: Any, steps: int, manual: bool) -> list[float]:
    """SGD steps on causal-LM batches; `manual`: call update_and_allocate as HF PEFT asks."""
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    losses = []
    for step, ids in enumerate(batches(steps)):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        if manual:
            model.base_model.update_and_allocate(step)
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def stripped(pattern: dict[str, Any]) -> dict[str, list[bool]]:
    return {k.removesuffix(".default"): list(v) for k, v in pattern.items()}


def logits(model: Any) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**tiny.inputs("llama")).logits


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both libraries trained from the same adapter weights for the whole schedule, then saved."""
    peft = pytest.importorskip("peft")
    root = tmp_path_factory.mktemp("adalora")
    models, losses = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lib in (peft, peftcore):
            torch.manual_seed(0)
            config = lib.AdaLoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **SCHEDULE)
            models[lib.__name__] = lib.get_peft_model(base_model(), config)
        start = {k: v for k, v in models["peft"].state_dict().items() if "lora_" in k}
        assert not models["peftcore"].load_state_dict(start, strict=False).unexpected_keys
        for name, model in models.items():
            losses[name] = train(model, 12, manual=True)
            model.save_pretrained(root / name)
    return {"models": models, "losses": losses, "root": root, "peft": peft}


def test_same_steps_give_same_losses_and_rank_pattern(trained: dict[str, Any]) -> None:
    assert trained["losses"]["peftcore"] == pytest.approx(trained["losses"]["peft"], rel=1e-5)
    pc, hf = (trained["models"][n].peft_config["default"] for n in ("peftcore", "peft"))
    assert stripped(pc.rank_pattern) == stripped(hf.rank_pattern)
    kept = sum(sum(v) for v in pc.rank_pattern.values())
    assert kept < SCHEDULE["init_r"] * len(pc.rank_pattern)  # the schedule pruned something


def test_pruned_files_match_and_load_across_libraries(trained: dict[str, Any]) -> None:
    peft, root = trained["peft"], trained["root"]
    pc_file = peftcore.load_peft_weights(str(root / "peftcore"))
    hf_file = peftcore.load_peft_weights(str(root / "peft"))
    assert {k: v.shape for k, v in pc_file.items()} == {k: v.shape for k, v in hf_file.items()}
    assert any(v.shape[0] < SCHEDULE["init_r"] for k, v in pc_file.items() if k.endswith("lora_E"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_peftcore = peftcore.PeftModel.from_pretrained(base_model(), root / "peft")
        in_peft = peft.PeftModel.from_pretrained(base_model(), root / "peftcore")
        expected = logits(trained["models"]["peft"])
        torch.testing.assert_close(logits(in_peftcore), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            logits(in_peft), logits(trained["models"]["peftcore"]), atol=1e-5, rtol=1e-5
        )
        merged_pc = in_peftcore.merge_and_unload().state_dict()
        merged_hf = (
            peft.PeftModel.from_pretrained(base_model(), root / "peft").merge_and_unload().state_dict()
        )
    for key, value in merged_hf.items():
        torch.testing.assert_close(merged_pc[key], value, atol=1e-5, rtol=1e-5, msg=key)


def test_the_optimizer_hook_runs_the_schedule_when_asked_and_stays_out_of_plain_loops(
    trained: dict[str, Any],
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        fresh = trained["peft"].get_peft_model(
            base_model(),
            trained["peft"].AdaLoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **SCHEDULE),
        )
    start = {k: v for k, v in fresh.state_dict().items() if "lora_" in k}  # the trained pair's start
    models = {}
    for mode in ("trainer", "always"):
        config = peftcore.AdaLoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **SCHEDULE)
        models[mode] = peftcore.get_peft_model(base_model(), config)
        models[mode].load_state_dict(start, strict=False)
        models[mode].base_model.allocate_on_optimizer_step = mode
        losses = train(models[mode], 12, manual=False)
    # "always": the hook alone reproduces HF PEFT's manual loop.
    assert losses == pytest.approx(trained["losses"]["peft"], rel=1e-5)
    expected = stripped(trained["models"]["peft"].peft_config["default"].rank_pattern)
    assert stripped(models["always"].peft_config["default"].rank_pattern) == expected
    # Default: a plain loop that never calls update_and_allocate prunes nothing, as with HF PEFT.
    assert models["trainer"].peft_config["default"].rank_pattern is None


def test_a_manual_loop_takes_over_from_the_hook_without_running_a_step_twice() -> None:
    models = {}
    for manual in (False, True):
        torch.manual_seed(0)
        config = peftcore.AdaLoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **SCHEDULE)
        models[manual] = peftcore.get_peft_model(base_model(), config)
        models[
            manual
        ].base_model.allocate_on_optimizer_step = "always"  # the hook runs; the loop may call too
        train(models[manual], 12, manual=manual)
    assert (
        models[True].peft_config["default"].rank_pattern == models[False].peft_config["default"].rank_pattern
    )
    torch.testing.assert_close(logits(models[True]), logits(models[False]))


def test_transformers_trainer_drives_the_schedule(tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments

    config = peftcore.AdaLoraConfig(task_type="CAUSAL_LM", **SCHEDULE)
    model = peftcore.get_peft_model(base_model(), config)
    rows = [{"input_ids": ids[0], "labels": ids[0]} for ids in batches(24)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=SCHEDULE["total_step"] + 2,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_strategy="no",
    )
    Trainer(model=model, args=args, train_dataset=rows).train()
    pattern = model.peft_config["default"].rank_pattern
    layers = len(model.base_model.rankallocator.layers)
    assert pattern and sum(sum(v) for v in pattern.values()) <= SCHEDULE["target_r"] * layers
    for key, kept in pattern.items():
        layer = model.base_model.model.get_submodule(key.removesuffix(".lora_E"))
        e = layer.lora_E["default"].detach().view(-1)
        assert torch.all(e[~torch.tensor(kept)] == 0), key


# -- refusals ---------------------------------------------------------------------------------------
def test_total_step_is_required() -> None:
    with pytest.raises(ValueError, match=r"total_step.*supply a value > 0.*len\(dataloader\)"):
        peftcore.AdaLoraConfig(init_r=4)


def test_schedule_without_a_budget_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="don't allow for a budgeting phase"):
        peftcore.AdaLoraConfig(total_step=10, tinit=6, tfinal=4)


def test_a_second_trainable_adapter_is_refused_before_any_change() -> None:
    model = peftcore.get_peft_model(base_model(), peftcore.AdaLoraConfig(total_step=10))
    before = [n for n, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="supports only 1 trainable adapter"):
        model.add_adapter("other", peftcore.AdaLoraConfig(total_step=10))
    assert [n for n, _ in model.named_parameters()] == before
    model.add_adapter("frozen", peftcore.AdaLoraConfig(total_step=10, inference_mode=True))
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".frozen" in n)


def test_unsupported_layer_is_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Embedding(5, 4))
    with pytest.raises(ValueError, match=r"'1' \(Embedding\) is not supported"):
        peftcore.get_peft_model(model, peftcore.AdaLoraConfig(total_step=10, target_modules=["0", "1"]))
    assert isinstance(model[0], nn.Linear)
