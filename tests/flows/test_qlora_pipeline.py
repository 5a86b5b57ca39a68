"""model.quantization: the finetune flow trains a LoRA adapter on a 4-bit or 8-bit base (QLoRA) on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from flows.finetune import finetune, preflight
from flows.params import FinetuneParams
from tests.flows import fixtures

pytest.importorskip("bitsandbytes")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama with the fixtures' byte-level tokenizer; hidden size 64 (bitsandbytes' CPU 4-bit
    kernel needs input sizes of at least its block size, 64)."""
    import transformers as tf

    out = tmp_path_factory.mktemp("qlora") / "llama"
    tokenizer = fixtures.bytelevel_tokenizer()
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=fixtures.MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    tf.LlamaForCausalLM(config).save_pretrained(out)
    return str(out)


def _params(root: Path, model: str, quantization: str) -> FinetuneParams:
    rows = fixtures.rows("causal_lm", 16)
    return FinetuneParams.model_validate(
        {
            "model": {
                "name_or_path": model,
                "task": "causal_lm",
                "dtype": "float32",
                "quantization": quantization,
            },
            "data": {
                "train_file": fixtures.write_jsonl(root / "train.jsonl", rows[:12]),
                "test_file": fixtures.write_jsonl(root / "test.jsonl", rows[12:]),
                "target_column": "target",
                "prompt_template": "Review: {text}\nSentiment:",
            },
            "peft": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "train": {
                "max_steps": 6,
                "batch_size": 4,
                "learning_rate": 1e-2,
                "logging_steps": 1,
                "eval_every": "no",
            },
            "eval": {"metrics": ["exact_match"], "max_new_tokens": 3},
            "tracking": {"experiment": f"qlora-{quantization}"},
            "output_dir": str(root / "out"),
        }
    )


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_finetune_trains_a_lora_adapter_on_a_quantized_base(
    quantization: str, llama_dir: str, mlflow_store: Any, tmp_path: Path
) -> None:
    import bitsandbytes as bnb

    from flows.steps.model import load_base_model

    params = _params(tmp_path, llama_dir, quantization)
    base = load_base_model(params, None)
    layer = base.model.layers[0].self_attn.q_proj
    assert isinstance(layer, {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}[quantization])

    summary = finetune(params)
    run = mlflow_store.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.quantization"] == quantization
    losses = [m.value for m in mlflow_store.get_metric_history(run.info.run_id, "train_loss")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    # The adapter is the float LoRA pair only, in HF's format, whatever the base's quantization.
    weights = load_file(str(Path(summary["adapter_dir"]) / "adapter_model.safetensors"))
    assert weights and all(".lora_A." in k or ".lora_B." in k for k in weights)
    assert all(t.dtype == torch.float32 for t in weights.values())
    assert "exact_match" in summary["metrics"]


def test_a_quantized_base_without_bitsandbytes_is_refused_first(
    llama_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(ValueError, match=r"model.quantization='4bit'.*bitsandbytes.*not installed"):
        preflight(_params(tmp_path, llama_dir, "4bit"))
