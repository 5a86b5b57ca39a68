"""Smoke test: bench/packing.py --quick trains the three batchings and prints the ratio and the loss gap."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_packing_quick_prints_the_ratio_and_equal_losses() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "packing.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    # Timings are machine noise; the report's shape and the equal losses are the contract.
    ratio = re.search(
        r"^RATIO packed / padded real tokens per second = (\d+\.\d\d)x wall, (\d+\.\d\d)x CPU", out, re.M
    )
    assert ratio and float(ratio.group(1)) > 0, out
    for variant in ("padded", "grouped", "packed"):
        assert re.search(rf"^{variant}\s+\d+\.\d\d\s+\d+\s+\d+\.\d\dx", out, re.M), (variant, out)
    gap = re.search(r"^LOSS  \|packed - padded\| train_loss = (\S+) ", out, re.M)
    assert gap and float(gap.group(1)) < 1e-5, out
