"""QLoRA training step: peftcore vs HF peft on the same 4-bit base, and peak memory against fp32 LoRA.

The base is the Llama of `lora_step.py` (same sizes, same seed), saved once and loaded back through
transformers' BitsAndBytesConfig (NF4, double quantization, float32 compute on CPU, bfloat16 on CUDA);
each variant prepares it with its library's `prepare_model_for_kbit_training` (no gradient
checkpointing: the step itself is compared) and adds LoRA:

    peftcore     peftcore LoRA on the 4-bit base
    peftcore-b   a second instance (A/A line: how far a ratio drifts on noise alone)
    peft         HF peft LoRA on the 4-bit base (skipped when peft is not installed)

Timing is interleaved round by round as in lora_step.py (median of per-round ratios, wall and CPU
time). Peak memory runs in a fresh subprocess per variant, and once more for peftcore LoRA on the
unquantized fp32 base of the same model, the figure QLoRA is for.

    .venv/bin/python bench/qlora_step.py                 # full run, CPU, 2 threads
    .venv/bin/python bench/qlora_step.py --quick --tiny  # smoke run (tests)
    .venv/bin/python bench/qlora_step.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lora_step as ls
import torch
from torch import nn

VARIANTS = ("peftcore", "peftcore-b", "peft", "fp32")


def save_base(setup: ls.Setup, root: Path) -> Path:
    """The fp32 base, saved once: every variant loads (and quantizes) the same weights."""
    path = root / "base"
    if not path.exists():
        ls.build_base(ls.Setup(torch.device("cpu"), torch.float32, setup.size, setup.seed)).save_pretrained(
            path
        )
    return path


def load_4bit(path: Path, setup: ls.Setup) -> nn.Module:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    compute = torch.bfloat16 if setup.device.type == "cuda" else torch.float32
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quant, device_map={"": str(setup.device)}, dtype=compute
    )
    return model.train()


def build_variant(variant: str, config: str, setup: ls.Setup, path: Path) -> tuple[nn.Module, Any]:
    targets, r, alpha = ls.CONFIGS[config]
    if variant == "fp32":
        base: nn.Module = ls.build_base(setup)
    else:
        base = load_4bit(path, setup)
    torch.manual_seed(setup.seed + 1)
    if variant == "peft":
        import peft

        base = peft.prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
        cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, task_type="CAUSAL_LM")
        model: nn.Module = peft.get_peft_model(base, cfg)
    else:
        import peftcore

        if variant != "fp32":
            base = peftcore.prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
        core = peftcore.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, task_type="CAUSAL_LM")
        model = peftcore.get_peft_model(base, core)
    model.train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def time_config(
    config: str, variants: list[str], setup: ls.Setup, path: Path, args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float]]:
    batch = ls.make_batch(setup)
    steppers, first_loss = {}, {}
    for v in variants:
        model, opt = build_variant(v, config, setup, path)
        steppers[v] = ls.make_step(model, opt, batch)
        first_loss[v] = float(steppers[v]())
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for rnd in range(args.warmup + args.rounds):
        k = rnd % len(variants)
        for v in variants[k:] + variants[:k]:
            ls.sync(setup.device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                steppers[v]()
            ls.sync(setup.device)
            if rnd >= args.warmup:
                wall[v].append((time.perf_counter() - t0) / args.steps)
                cpu[v].append((time.process_time() - c0) / args.steps)
    return wall, cpu, first_loss


def memory_worker(variant: str, config: str, setup: ls.Setup, path: Path, steps: int) -> dict[str, float]:
    import transformers as tf

    tf.LlamaForCausalLM  # noqa: B018  (import the lazy module before the baseline reading)
    if variant == "peft":
        import peft  # noqa: F401
    import bitsandbytes  # noqa: F401

    import peftcore  # noqa: F401

    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    gc.collect()
    base_kib = ls._vm_kib("VmRSS")
    model, opt = build_variant(variant, config, setup, path)
    step = ls.make_step(model, opt, ls.make_batch(setup))
    for _ in range(steps):
        step()
    if setup.device.type == "cuda":
        torch.cuda.synchronize()
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    peak_kib = ls._vm_kib("VmHWM") or 0
    return {"peak_mib": (peak_kib - (base_kib or 0)) / 1024}


def measure_memory(variant: str, config: str, args: argparse.Namespace, path: Path) -> float | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", variant, "--configs", config]
    cmd += [
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--base",
        str(path),
    ]
    if args.tiny:
        cmd.append("--tiny")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"  [memory worker {variant} failed: {proc.stderr.strip()[-500:]}]")
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"])


def report(config: str, variants: list[str], setup: ls.Setup, path: Path, args: argparse.Namespace) -> None:
    targets, r, _ = ls.CONFIGS[config]
    print(f"\n== {config}: target_modules={targets!r} r={r}, 4-bit NF4 base ==")
    timed = [v for v in variants if v != "fp32"]
    wall, cpu, first = time_config(config, timed, setup, path, args)
    print(f"  {'variant':<12} {'first loss':>11} {'median s/step':>14} {'median cpu s/step':>18}")
    for v in timed:
        print(
            f"  {v:<12} {first[v]:>11.6f} {statistics.median(wall[v]):>14.4f} {statistics.median(cpu[v]):>18.4f}"
        )
    pairs = [("peftcore", "peftcore-b", "A/A noise gauge")]
    if "peft" in timed:
        pairs.append(("peftcore", "peft", "target <= 1.00x"))
    for num, den, note in pairs:
        med, lo, hi = ls.ratio(wall, num, den)
        print(
            f"  ratio {num}/{den:<12} = {med:.3f}x  (rounds {lo:.3f}-{hi:.3f}; cpu time "
            f"{ls.ratio(cpu, num, den)[0]:.3f}x; {note})"
        )
    if not args.skip_memory:
        memory = {
            v: measure_memory(v, config, args, path) for v in ("peftcore", "peft", "fp32") if v in variants
        }
        where = "peak MiB" if args.device == "cuda" else "peak MiB over imports"
        for v, mib in memory.items():
            plain = "bf16" if setup.dtype == torch.bfloat16 else "fp32"
            label = {
                "fp32": f"peftcore LoRA, {plain} base",
                "peft": "HF peft QLoRA",
                "peftcore": "peftcore QLoRA",
            }[v]
            print(f"  memory {label:<26} {mib if mib is not None else float('nan'):8.1f} {where}")
        if memory.get("peftcore") and memory.get("fp32"):
            print(
                f"  memory QLoRA / fp32 LoRA      = {memory['peftcore'] / memory['fp32']:.3f}x  (bf16 on CUDA)"
            )
        if memory.get("peftcore") and memory.get("peft"):
            print(f"  memory peftcore / peft QLoRA  = {memory['peftcore'] / memory['peft']:.3f}x")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 8, --quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="discarded rounds (default 2, --quick 1)")
    p.add_argument(
        "--steps", type=int, default=None, help="steps per variant per round (default 2, --quick 1)"
    )
    p.add_argument("--configs", default=",".join(ls.CONFIGS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--no-peft", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-worker", default=None, choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--base", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, full, quick in (("rounds", 8, 2), ("warmup", 2, 1), ("steps", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    unknown = set(args.configs.split(",")) - set(ls.CONFIGS)
    if unknown:
        p.error(f"--configs got {sorted(unknown)}; choose from {list(ls.CONFIGS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    size = ls.SIZES["tiny" if args.tiny else "full"]
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    setup = ls.Setup(torch.device(args.device), dtype, size, args.seed)
    configs = args.configs.split(",")
    if args.memory_worker:
        path = Path(args.base)
        print(json.dumps(memory_worker(args.memory_worker, configs[0], setup, path, steps=2)))
        return
    variants = ["peftcore", "peftcore-b", "fp32"] + ([] if args.no_peft or not ls.have_peft() else ["peft"])
    print(f"QLoRA step: device={args.device} threads={args.threads} size={size}")
    with tempfile.TemporaryDirectory(prefix="qlora-bench-") as tmp:
        path = save_base(setup, Path(tmp))
        for config in configs:
            report(config, variants, setup, path, args)


if __name__ == "__main__":
    main()
