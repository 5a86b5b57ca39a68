"""Smoke test: bench/lora_step.py runs end to end on a tiny model and prints every ratio line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "lora_step.py"
RATIO = r"= \d+\.\d{3}x"


@pytest.mark.slow
def test_bench_quick_tiny_prints_ratios() -> None:
    cmd = [
        sys.executable,
        str(BENCH),
        "--quick",
        "--tiny",
        "--configs",
        "qv-r8",
        "--rounds",
        "2",
        "--warmup",
        "0",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    # Timings are machine noise; only the report's shape is a contract.
    assert re.search(rf"ratio peftcore/peftcore-b\s+{RATIO}", out), out
    assert re.search(rf"ratio peftcore/floor\s+{RATIO}", out), out
    assert "same-weights check: first-loss spread 0.00e+00" in out, out
    try:
        import peft  # noqa: F401
    except ImportError:
        assert "ratio peftcore/peft          : skipped (peft not installed)" in out, out
    else:
        assert re.search(rf"ratio peftcore/peft\s+{RATIO}", out), out
        assert re.search(r"memory peftcore/peft peak\s+= \d+\.\d{3}x", out), out


@pytest.mark.slow
def test_qlora_bench_quick_tiny_prints_ratios_and_memory() -> None:
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("peft")
    bench = BENCH.parent / "qlora_step.py"
    cmd = [sys.executable, str(bench), "--quick", "--tiny", "--configs", "qv-r8", "--warmup", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert re.search(rf"ratio peftcore/peftcore-b\s+{RATIO}", out), out
    assert re.search(rf"ratio peftcore/peft\s+{RATIO}", out), out
    assert re.search(rf"memory QLoRA / fp32 LoRA\s+{RATIO}", out), out
    # Same 4-bit base, same adapter init: both libraries start from the same loss.
    losses = re.findall(r"^\s+(peftcore|peftcore-b|peft)\s+(\d+\.\d{6})", out, flags=re.M)
    assert len({value for _, value in losses}) == 1, losses


@pytest.mark.slow
def test_method_step_bench_quick_prints_a_ratio_per_method() -> None:
    pytest.importorskip("peft")
    bench = BENCH.parent / "method_step.py"
    cmd = [sys.executable, str(bench), "--quick", "--methods", "ia3,prompt_tuning,loha"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for method in ("ia3", "prompt_tuning", "loha"):
        assert re.search(rf"^{method}\s+[\d.]+\s+[\d.]+\s+[\d.]+x\s+[\d.]+x\s+[\d.]+x$", proc.stdout, re.M), (
            proc.stdout
        )
