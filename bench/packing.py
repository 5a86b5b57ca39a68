"""Training throughput with `data.packing` vs padded batches, on a mixed-length instruction set.

The pipeline's own steps (tokenize, then the train step) train a Llama-style model built from a
config on generated prompt/completion pairs whose lengths vary a lot, as real instruction data do
(a few words to several hundred characters). Three ways to batch the same examples:

    padded    batches in random order, padded to their longest example (the default)
    grouped   train.group_by_length: similar lengths batched together, less padding
    packed    data.packing: each batch is one padding-free row, position ids restarting per example

Every variant trains one whole epoch, so each sees every example once (padded and packed in the same
order; grouped reorders them) and the ratio of times is the ratio of real (non-padding) tokens per
second: wall clock (the train step's
own runtime) and process CPU time (the whole train step; steadier on a shared machine). Rounds
interleave the variants, the first round is a warm-up, and each ratio is the median of the per-round
ratios. The
final train losses of padded and packed must agree: packing changes the speed, not the training.

    .venv/bin/python bench/packing.py            # full run: 2 CPU threads (a GPU when there is one)
    .venv/bin/python bench/packing.py --quick    # smoke run, tiny model (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("padded", "grouped", "packed")


def write_model(root: Path, quick: bool) -> str:
    """A byte-level tokenizer (one token per byte) and a Llama model from a config, saved to `root`."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    pieces = ["<s>", "</s>", "<pad>", *sorted(pre_tokenizers.ByteLevel.alphabet())]
    tok = Tokenizer(models.BPE({p: i for i, p in enumerate(pieces)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=4096
    )
    width, layers = (64, 2) if quick else (256, 4)
    config = tf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=width * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=width // 64 * 2 if not quick else 2,
        num_key_value_heads=width // 64 if not quick else 1,
        max_position_embeddings=4096,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    tokenizer.save_pretrained(root / "model")
    tf.LlamaForCausalLM(config).save_pretrained(root / "model")
    return str(root / "model")


def write_data(root: Path, n: int, seed: int = 0) -> str:
    """Prompt/completion pairs with heavy-tailed lengths, log-uniform: prompts of 8 to 256 characters,
    completions of 8 to 512."""
    rng = random.Random(seed)
    words = ["the", "a", "model", "answer", "explain", "why", "list", "three", "steps", "data", "value"]

    def text(low: int, high: int) -> str:
        size = round(2 ** rng.uniform(low.bit_length() - 1, high.bit_length() - 1))
        out = ""
        while len(out) < size:
            out += rng.choice(words) + " "
        return out[:size]

    rows = [{"prompt": text(8, 256), "completion": text(8, 512)} for _ in range(n)]
    path = root / "instructions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def params_for(variant: str, model: str, data: str, out: Path, args: argparse.Namespace) -> Any:
    from flows.params import FinetuneParams

    return FinetuneParams.model_validate(
        {
            "model": {"name_or_path": model, "task": "causal_lm", "dtype": "float32"},
            "data": {
                "train_file": data,
                "test_fraction": 0.05,
                "format": "completion",
                "max_length": 1024,
                "packing": variant == "packed",
            },
            "peft": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"},
            "train": {
                "epochs": 1,
                "batch_size": args.batch_size,
                "learning_rate": 1e-3,
                "logging_steps": 1_000,
                "save_steps": 10_000,
                "eval_every": "no",
                "group_by_length": variant == "grouped",
                "num_threads": args.threads,
            },
            "eval": {"metrics": ["exact_match"]},
            "output_dir": str(out),
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny model, few rows and rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds, the first a warm-up (default 3)")
    parser.add_argument("--rows", type=int, default=None, help="examples (default 256; one epoch each run)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.rows = args.rows or (48 if args.quick else 256)

    from flows.steps.data import tokenize
    from flows.steps.train import train

    work = Path(tempfile.mkdtemp(prefix="bench-packing-"))
    model = write_model(work, args.quick)
    data_file = write_data(work, args.rows)
    datasets = {}
    for variant in VARIANTS:
        params = params_for(variant, model, data_file, work / "out", args)
        datasets[variant] = (params, tokenize(params, str(work / "cache")))
    lengths = _lengths(datasets["padded"][1].path)
    print(
        f"data: {len(lengths)} train examples, {sum(lengths)} tokens, per example min {min(lengths)} / median "
        f"{int(statistics.median(lengths))} / max {max(lengths)}; batch {args.batch_size}, one epoch, "
        f"{args.threads} threads, {args.rounds} rounds (first is warm-up)"
    )
    runs: dict[str, list[Any]] = {v: [] for v in VARIANTS}
    for round_ in range(args.rounds):
        order = VARIANTS[round_ % 3 :] + VARIANTS[: round_ % 3]  # rotate who goes first
        for variant in order:
            params, data = datasets[variant]
            cpu = time.process_time()
            result = train(params, data, str(work / f"run-{variant}-{round_}"))
            cpu = time.process_time() - cpu
            runs[variant].append((result, cpu))
            print(
                f"  round {round_} {variant:<8} {result.train_runtime_s:7.2f} s wall  {cpu:7.2f} s CPU   "
                f"train_loss {result.train_loss:.6f}"
            )
    kept = {v: r[1:] if len(r) > 1 else r for v, r in runs.items()}
    tokens = sum(lengths)  # every variant trains on every example once
    print(
        f"\n{'variant':<10}{'wall s':>9}{'tokens/s':>10}{'÷ padded':>10}{'CPU s':>9}{'÷ padded':>10}"
        f"{'train_loss':>13}"
    )
    ratios: dict[str, tuple[float, float]] = {}
    for variant in VARIANTS:
        wall = [r.train_runtime_s for r, _ in kept[variant]]
        cpu = [c for _, c in kept[variant]]
        ratios[variant] = (
            statistics.median(r.train_runtime_s / w for (r, _), w in zip(kept["padded"], wall)),
            statistics.median(c0 / c for (_, c0), c in zip(kept["padded"], cpu)),
        )
        print(
            f"{variant:<10}{statistics.median(wall):>9.2f}{tokens / statistics.median(wall):>10.0f}"
            f"{ratios[variant][0]:>9.2f}x{statistics.median(cpu):>9.2f}{ratios[variant][1]:>9.2f}x"
            f"{kept[variant][-1][0].train_loss:>13.6f}"
        )
    gap = abs(kept["packed"][-1][0].train_loss - kept["padded"][-1][0].train_loss)
    wall_ratio, cpu_ratio = ratios["packed"]
    print(
        f"\nRATIO packed / padded real tokens per second = {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time "
        "(target >= 1.5x)"
    )
    print(f"LOSS  |packed - padded| train_loss = {gap:.2e} (same examples, same order)")
    return 0


def _lengths(path: str) -> list[int]:
    import pyarrow.compute as pc
    from datasets import load_from_disk

    column = load_from_disk(path)["train"].with_format("arrow")["input_ids"]
    return [int(n) for n in pc.list_value_length(column).to_pylist()]


if __name__ == "__main__":
    sys.exit(main())
