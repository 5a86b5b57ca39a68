"""Narrow the kit's selections to the methods of issue 10, one file per method.

usage (from the repository root):
    python tools/peft-suite/selections/narrow.py [KIT_SELECTIONS_DIR] [OUT_DIR]

Reads `other_methods_custom_models.txt`, `other_methods_other_files.txt` and `lora_other_files.txt` of
the kit (default `../shared/peft-suite/selections`) and writes `<method>.txt` (default: next to this
script). A test id belongs to a method when it names the method's config class, its label in
test_custom_models.py ("Vanilla MLP 1 LOHA", "LoKr Same"), or its name in the test function or class
(`test_requires_grad_ia3_conv2d`, `TestAdaLoraInitialization`, `..._prefix_tuning`); the PiSSA / OLoRA
cases are the LoRA tests whose id names `pissa` or `olora`. An id naming two methods is reported and
left out (none does in the kit of 2026-08-21).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS: dict[str, re.Pattern[str]] = {
    "ia3": re.compile(r"ia3", re.I),
    "loha": re.compile(r"loha", re.I),
    "lokr": re.compile(r"lokr", re.I),
    "adalora": re.compile(r"adalora", re.I),
    # "MultitaskPromptTuningConfig" is another method: the class name must start at a word boundary.
    "prompt_tuning": re.compile(r"\bPromptTuningConfig|TestPromptTuningInitialization|\bprompt_tuning\b"),
    "p_tuning": re.compile(r"\bPromptEncoderConfig|test_prompt_encoder_"),
    "prefix_tuning": re.compile(r"\bPrefixTuningConfig|_prefix_tuning\b"),
}
PISSA_OLORA = re.compile(r"pissa|olora", re.I)
OTHER_METHOD_FILES = ("other_methods_custom_models.txt", "other_methods_other_files.txt")


def main() -> None:
    kit = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / ".." / "shared/peft-suite/selections"
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE
    picked: dict[str, list[str]] = {name: [] for name in [*METHODS, "pissa_olora"]}
    for fname in OTHER_METHOD_FILES:
        for line in (kit / fname).read_text().splitlines():
            hits = [name for name, pattern in METHODS.items() if pattern.search(line)]
            if len(hits) == 1:
                picked[hits[0]].append(line)
            elif len(hits) > 1:
                print(f"left out (names {hits}): {line}", file=sys.stderr)
    for line in (kit / "lora_other_files.txt").read_text().splitlines():
        if PISSA_OLORA.search(line):
            picked["pissa_olora"].append(line)
    for name, lines in picked.items():
        (out_dir / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))
        print(f"{name}: {len(lines)}")


if __name__ == "__main__":
    main()
