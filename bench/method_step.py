"""Training-step speed of every peftcore method against Hugging Face peft's, same model, same batch.

For each method both libraries wrap the same Llama (built from a config, same seed) with the same
config, and train it with AdamW on a causal-LM loss. AdaLoRA runs its rank schedule every step in
both: peftcore from its optimizer hook, HF peft through the `update_and_allocate` call its users
write. Timing is interleaved round by round in a rotating order (slow phases of a shared machine hit
both alike); warm-up rounds are dropped; the ratio is the median of per-round ratios, of wall-clock
and of process CPU time. A peftcore ÷ peftcore line gives the noise floor of one ratio.

    .venv/bin/python bench/method_step.py               # all methods, 2 threads
    .venv/bin/python bench/method_step.py --quick       # few rounds, tiny model (smoke)
    .venv/bin/python bench/method_step.py --methods ia3,loha
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch
from torch import nn

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Method -> (config class name, kwargs): the same in both libraries.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "lora": ("LoraConfig", {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}),
    "ia3": ("IA3Config", {}),
    "loha": ("LoHaConfig", {"r": 8, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
    "lokr": ("LoKrConfig", {"r": 8, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
    "adalora": (
        "AdaLoraConfig",
        {"init_r": 12, "target_r": 8, "total_step": 100_000, "target_modules": ["q_proj", "v_proj"]},
    ),
    "prompt_tuning": ("PromptTuningConfig", {"num_virtual_tokens": 20}),
    "p_tuning": ("PromptEncoderConfig", {"num_virtual_tokens": 20, "encoder_hidden_size": 128}),
    "prefix_tuning": ("PrefixTuningConfig", {"num_virtual_tokens": 20}),
}
SIZES = {
    "full": {"hidden": 256, "inter": 688, "layers": 4, "heads": 8, "vocab": 4000, "batch": 8, "seq": 64},
    "tiny": {"hidden": 64, "inter": 128, "layers": 2, "heads": 4, "vocab": 256, "batch": 2, "seq": 16},
}


def build(lib: Any, method: str, size: dict[str, int]) -> tuple[nn.Module, Callable[[], None]]:
    import transformers as tf
    from lora_step import llama_config

    torch.manual_seed(0)
    base = tf.LlamaForCausalLM(llama_config(size)).train()
    name, kwargs = METHODS[method]
    torch.manual_seed(1)
    model = lib.get_peft_model(base, getattr(lib, name)(task_type="CAUSAL_LM", **kwargs))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, size["vocab"], (size["batch"], size["seq"]), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    hf_schedule = method == "adalora" and lib.__name__ == "peft"
    counter = [0]

    def step() -> None:
        model(**batch).loss.backward()
        opt.step()
        if hf_schedule:  # what HF PEFT's users write; peftcore runs it from the optimizer hook
            model.base_model.update_and_allocate(counter[0])
        opt.zero_grad(set_to_none=True)
        counter[0] += 1

    return model, step


def measure(method: str, size: dict[str, int], rounds: int, warmup: int, steps: int) -> dict[str, float]:
    import peft

    import peftcore

    steppers = {
        "peftcore": build(peftcore, method, size)[1],
        "peftcore-b": build(peftcore, method, size)[1],
        "peft": build(peft, method, size)[1],
    }
    names = list(steppers)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(warmup + rounds):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                steppers[name]()
            if rnd >= warmup:
                wall[name].append((time.perf_counter() - t0) / steps)
                cpu[name].append((time.process_time() - c0) / steps)

    def ratio(per: dict[str, list[float]], a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(per[a], per[b], strict=True))

    return {
        "ms_peftcore": 1000 * statistics.median(wall["peftcore"]),
        "ms_peft": 1000 * statistics.median(wall["peft"]),
        "wall": ratio(wall, "peftcore", "peft"),
        "cpu": ratio(cpu, "peftcore", "peft"),
        "aa": ratio(wall, "peftcore", "peftcore-b"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, 2 rounds (smoke)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    size = SIZES["tiny" if args.quick else "full"]
    rounds, warmup, steps = (2, 1, 1) if args.quick else (args.rounds, 2, 3)
    s = size
    print(
        f"Llama {s['hidden']}/{s['inter']} x {s['layers']} layers, batch {s['batch']} x {s['seq']}, AdamW, "
        f"{args.threads} threads; {rounds} interleaved rounds of {steps} steps (+{warmup} warm-up)"
    )
    print(f"{'method':<14} {'peftcore ms':>11} {'peft ms':>8} {'wall ratio':>10} {'cpu ratio':>9} {'A/A':>6}")
    for method in args.methods.split(","):
        r = measure(method, size, rounds, warmup, steps)
        print(
            f"{method:<14} {r['ms_peftcore']:>11.1f} {r['ms_peft']:>8.1f} {r['wall']:>9.3f}x {r['cpu']:>8.3f}x "
            f"{r['aa']:>5.3f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
