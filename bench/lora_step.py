"""Training-step speed and peak memory of peftcore LoRA vs HF peft vs the frozen-weights floor.

Every variant is built from the same base weights (same seed) on a Llama config, then trained with
AdamW on a causal-LM loss. The three variants:

    floor     all weights frozen; the input embeddings' output requires grad, so backward still runs
              through every layer (activation gradients only, no parameter gradients, no optimizer)
    peftcore  LoRA from this repository
    peft      LoRA from Hugging Face peft (skipped when peft is not installed)

A second peftcore instance gives an A/A line (peftcore ÷ peftcore): the machine is shared and noisy,
and that line shows how far a ratio drifts from 1.00 on noise alone.

Timing is interleaved round by round, in a rotating order, so slow phases of the machine hit every
variant alike; warm-up rounds are dropped and each ratio is the median of the per-round ratios,
of wall-clock time (the headline figure) and of process CPU time (less sensitive to other load).
Peak memory is measured in a fresh subprocess per variant (CPU: peak RSS above the RSS right after
the imports, i.e. model, optimizer state and activations; CUDA: torch.cuda.max_memory_allocated).

    .venv/bin/python bench/lora_step.py                 # full run, CPU, 2 threads
    .venv/bin/python bench/lora_step.py --quick         # few rounds (smoke / CI)
    .venv/bin/python bench/lora_step.py --quick --tiny  # tiny model too (tests)
    .venv/bin/python bench/lora_step.py --device cuda   # bf16 base weights on a GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch
from torch import nn

# HF peft reads a property transformers 5 deprecated; the warning is noise in this report.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

# Run as a script from anywhere: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# LoRA setups compared: name -> (target_modules, r, lora_alpha).
CONFIGS: dict[str, tuple[Any, int, int]] = {
    "qv-r8": (["q_proj", "v_proj"], 8, 16),
    "all-linear-r16": ("all-linear", 16, 32),
}

# Model and batch sizes: the spec, and a tiny one for tests.
SIZES: dict[str, dict[str, int]] = {
    "full": {"hidden": 512, "inter": 1376, "layers": 4, "heads": 8, "vocab": 8000, "batch": 8, "seq": 128},
    "tiny": {"hidden": 64, "inter": 128, "layers": 2, "heads": 4, "vocab": 256, "batch": 2, "seq": 16},
}

VARIANTS = ("floor", "peftcore", "peftcore-b", "peft")


def have_peft() -> bool:
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Setup:
    device: torch.device
    dtype: torch.dtype
    size: dict[str, int]
    seed: int


def llama_config(size: dict[str, int]) -> Any:
    """The Llama config of a SIZES entry (every attention head has its own keys and values)."""
    import transformers as tf

    return tf.LlamaConfig(
        hidden_size=size["hidden"],
        intermediate_size=size["inter"],
        num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"],
        num_key_value_heads=size["heads"],
        vocab_size=size["vocab"],
        max_position_embeddings=max(256, size["seq"]),
    )


def build_base(setup: Setup) -> nn.Module:
    """The Llama model every variant starts from: same seed, so the same weights."""
    import transformers as tf

    torch.manual_seed(setup.seed)
    model = tf.LlamaForCausalLM(llama_config(setup.size))
    return model.to(device=setup.device, dtype=setup.dtype).train()


def build_variant(variant: str, config: str, setup: Setup) -> tuple[nn.Module, torch.optim.Optimizer | None]:
    """The model and optimizer of one variant; the floor has no trainable parameters, so no optimizer."""
    model = build_base(setup)
    if variant == "floor":
        model.requires_grad_(False)
        # Gradients then flow through every activation but reach no parameter.
        model.get_input_embeddings().register_forward_hook(lambda _m, _i, out: out.requires_grad_(True))
        return model, None
    targets, r, alpha = CONFIGS[config]
    # Same adapter init stream for both libraries (B starts at zero, so the first losses match).
    torch.manual_seed(setup.seed + 1)
    if variant.startswith("peftcore"):
        import peftcore

        core_cfg = peftcore.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, task_type="CAUSAL_LM")
        wrapped: nn.Module = peftcore.get_peft_model(model, core_cfg)
    elif variant == "peft":
        import peft

        hf_cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, task_type="CAUSAL_LM")
        wrapped = peft.get_peft_model(model, hf_cfg)
    else:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    wrapped.train()
    params = [p for p in wrapped.parameters() if p.requires_grad]
    return wrapped, torch.optim.AdamW(params, lr=1e-4)


def arithmetic_bound(config: str, setup: Setup) -> tuple[float, float]:
    """The least peftcore ÷ floor can be, counting multiply-adds per token: (ratio, LoRA's share).

    The floor runs every Linear forward and its input gradient (2·in·out per token) and attention's
    matmuls (2·seq·hidden per token and layer forward, twice that backward). LoRA adds, per adapted
    Linear, x·A and ·B forward, their input gradients, and the gradients of A and B: 3·r·(in + out).
    Elementwise work and the optimizer are left out, so the true floor of the ratio is higher still.
    """
    import transformers as tf

    s = setup.size
    with torch.device("meta"):
        model = tf.LlamaForCausalLM(llama_config(s))
    targets, r, _ = CONFIGS[config]
    floor = 6 * s["seq"] * s["hidden"] * s["layers"]
    extra = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        floor += 2 * module.in_features * module.out_features
        adapted = name != "lm_head" if targets == "all-linear" else name.rsplit(".", 1)[-1] in targets
        if adapted:
            extra += 3 * r * (module.in_features + module.out_features)
    return (floor + extra) / floor, extra / floor


def make_batch(setup: Setup) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(setup.seed + 2)
    s = setup.size
    ids = torch.randint(0, s["vocab"], (s["batch"], s["seq"]), generator=g).to(setup.device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def make_step(
    model: nn.Module, opt: torch.optim.Optimizer | None, batch: dict[str, torch.Tensor]
) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        loss = model(**batch).loss
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def time_config(
    config: str, variants: list[str], setup: Setup, rounds: int, warmup: int, steps: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float], dict[str, int]]:
    """Per kept round, wall and process-CPU seconds per step of each variant; first losses; trainable counts.

    CPU time counts the work done by this process whatever share of the cores it got, so on a shared
    machine its ratios scatter less than wall-clock ones (on CUDA it only counts the host side).
    """
    batch = make_batch(setup)
    steppers, first_loss, trainable = {}, {}, {}
    for v in variants:
        model, opt = build_variant(v, config, setup)
        trainable[v] = trainable_count(model)
        steppers[v] = make_step(model, opt, batch)
        first_loss[v] = float(steppers[v]())  # also the first warm-up step
    per_round: dict[str, list[float]] = {v: [] for v in variants}
    per_round_cpu: dict[str, list[float]] = {v: [] for v in variants}
    for rnd in range(warmup + rounds):
        k = rnd % len(variants)
        for v in variants[k:] + variants[:k]:  # rotate who goes first
            sync(setup.device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                steppers[v]()
            sync(setup.device)
            if rnd >= warmup:
                per_round[v].append((time.perf_counter() - t0) / steps)
                per_round_cpu[v].append((time.process_time() - c0) / steps)
    return per_round, per_round_cpu, first_loss, trainable


def ratio(per_round: dict[str, list[float]], num: str, den: str) -> tuple[float, float, float]:
    """Median, min and max over rounds of num/den measured in the same round."""
    rs = [a / b for a, b in zip(per_round[num], per_round[den])]
    return statistics.median(rs), min(rs), max(rs)


# -- peak memory, one subprocess per variant ---------------------------------------------------------
def _vm_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_worker(variant: str, config: str, setup: Setup, steps: int) -> dict[str, float]:
    """Peak memory (MiB) of building one variant and running `steps` training steps.

    Runs in a fresh process. On CPU the figure is the peak RSS above the RSS once the libraries are
    imported, so importing a bigger library does not count as training memory; on CUDA it is
    torch.cuda.max_memory_allocated.
    """
    import transformers as tf

    tf.LlamaForCausalLM  # noqa: B018  (a lazy module: touching the class imports it now)
    if variant == "peft":
        import peft  # noqa: F401
    else:
        import peftcore  # noqa: F401
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        model, opt = build_variant(variant, config, setup)
        step = make_step(model, opt, make_batch(setup))
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    gc.collect()
    base_kib = _vm_kib("VmRSS")
    model, opt = build_variant(variant, config, setup)
    step = make_step(model, opt, make_batch(setup))
    for _ in range(steps):
        step()
    peak_kib = _vm_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": (peak_kib - (base_kib or 0)) / 1024}


def measure_memory(variant: str, config: str, args: argparse.Namespace) -> dict[str, float] | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", variant, "--configs", config]
    cmd += ["--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads)]
    cmd += ["--seed", str(args.seed), "--memory-steps", str(args.memory_steps)]
    if args.tiny:
        cmd.append("--tiny")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"  [memory worker {variant} failed: {proc.stderr.strip()[-500:]}]")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report ------------------------------------------------------------------------------------------
def report_config(config: str, variants: list[str], setup: Setup, args: argparse.Namespace) -> None:
    targets, r, _ = CONFIGS[config]
    print(f"\n== {config}: target_modules={targets!r} r={r} ==")
    per_round, per_round_cpu, first_loss, trainable = time_config(
        config, variants, setup, args.rounds, args.warmup, args.steps
    )
    # peftcore-b is the same build as peftcore: its memory would only repeat that figure.
    measured = [v for v in variants if v != "peftcore-b" and not args.skip_memory]
    memory = {v: measure_memory(v, config, args) if v in measured else None for v in variants}
    mem_head = "" if args.skip_memory else ("peak MiB" if args.device == "cuda" else "peak MiB over imports")
    print(
        f"  {'variant':<12} {'trainable':>10} {'first loss':>11} {'median s/step':>14} {'min s/step':>11}"
        f" {'median cpu s/step':>18}  {mem_head}"
    )
    for v in variants:
        m = memory[v]
        mem = f"{m['peak_mib']:8.1f}" if m else ""
        times = per_round[v]
        print(
            f"  {v:<12} {trainable[v]:>10,} {first_loss[v]:>11.6f} "
            f"{statistics.median(times):>14.4f} {min(times):>11.4f} {statistics.median(per_round_cpu[v]):>18.4f}  {mem}"
        )
    # Same base weights and B = 0 at init: every variant's first loss must agree.
    spread = max(first_loss.values()) - min(first_loss.values())
    print(f"  same-weights check: first-loss spread {spread:.2e}")
    lines = [("peftcore/peftcore-b", "peftcore", "peftcore-b", "A/A noise gauge")]
    if "peft" in variants:
        lines.append(("peftcore/peft", "peftcore", "peft", "target <= 1.00x"))
        lines.append(("peft/floor", "peft", "floor", "reference"))
    lines.append(("peftcore/floor", "peftcore", "floor", "target <= 1.05x"))
    for label, num, den, note in lines:
        med, lo, hi = ratio(per_round, num, den)
        cpu = ratio(per_round_cpu, num, den)[0]
        print(f"  ratio {label:<20} = {med:.3f}x  (rounds {lo:.3f}-{hi:.3f}; cpu time {cpu:.3f}x; {note})")
    bound, share = arithmetic_bound(config, setup)
    print(
        f"  arithmetic bound peftcore/floor >= {bound:.3f}x  (LoRA adds {share:.1%} of the floor's "
        "multiply-adds; elementwise work not counted)"
    )
    if "peft" not in variants:
        print("  ratio peftcore/peft          : skipped (peft not installed)")
    if memory.get("peftcore") and memory.get("peft"):
        a, b = memory["peftcore"]["peak_mib"], memory["peft"]["peak_mib"]
        verdict = "OK" if a <= b else "HIGHER than peft"
        print(f"  memory peftcore/peft peak      = {a / b:.3f}x  ({a:.1f} vs {b:.1f} MiB; {verdict})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--dtype", default=None, choices=["fp32", "bf16"], help="base weights (default: cpu fp32, cuda bf16)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 10, --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="discarded rounds (default 2, --quick 1)")
    p.add_argument(
        "--steps", type=int, default=None, help="steps per variant per round (cpu 2, cuda 10, --quick 1)"
    )
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}")
    p.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    p.add_argument("--tiny", action="store_true", help="tiny model and batch (tests)")
    p.add_argument("--skip-memory", action="store_true", help="no peak-memory subprocesses")
    p.add_argument("--no-peft", action="store_true", help="leave HF peft out even if installed")
    p.add_argument("--memory-steps", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--memory-worker", default=None, choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    # A GPU step takes milliseconds: more steps per round keep launch jitter out of the ratios.
    steps = 10 if args.device == "cuda" else 2
    for name, full, quick in (("rounds", 10, 3), ("warmup", 2, 1), ("steps", steps, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        p.error(f"--configs got {sorted(unknown)}; choose from {list(CONFIGS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda given but torch.cuda.is_available() is False; use --device cpu")
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        p.error("--rounds and --steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = Setup(
        device=torch.device(args.device),
        dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32,
        size=SIZES["tiny" if args.tiny else "full"],
        seed=args.seed,
    )
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.configs, setup, args.memory_steps)))
        return 0
    variants = ["floor", "peftcore", "peftcore-b"]
    peft_note = "not installed"
    if not args.no_peft and have_peft():
        import peft

        variants.append("peft")
        peft_note = peft.__version__
    s = setup.size
    print(
        f"lora_step: device={args.device} dtype={args.dtype} threads={args.threads} torch={torch.__version__} "
        f"peft={peft_note}\n  llama hidden={s['hidden']} inter={s['inter']} layers={s['layers']} "
        f"heads={s['heads']} vocab={s['vocab']}; batch {s['batch']}x{s['seq']}; AdamW; "
        f"{args.rounds} rounds (+{args.warmup} warm-up) x {args.steps} steps, rotating order; "
        "ratios = median of per-round ratios"
    )
    for config in args.configs.split(","):
        report_config(config, variants, setup, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
