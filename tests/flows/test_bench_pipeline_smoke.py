"""Smoke test: bench/pipeline.py --quick runs the flow and the direct steps and prints both ratios."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "pipeline.py"


@pytest.mark.slow
def test_bench_pipeline_quick_prints_both_ratios() -> None:
    # Several minutes on a busy 2-core machine: imports, the ephemeral Prefect server, four short runs.
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=880, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    # Timings are machine noise; the report's shape is the contract.
    overhead = re.search(r"^RATIO orchestration\+tracking overhead .*= (\d+\.\d{3}) ", out, re.M)
    cache = re.search(r"^RATIO tokenize cold/warm cache .*= (\d+\.\d)x ", out, re.M)
    assert overhead and cache, out
    assert float(overhead.group(1)) > 0 and float(cache.group(1)) > 0, out
    assert "Prefect: first flow call" in out, out
    # Each step and each MLflow call of the flow is in the breakdown, and the tracked work really ran.
    for label in ("tokenize", "wrap", "train", "evaluate", "mlflow: create run", "mlflow: log_train"):
        assert re.search(rf"^  {re.escape(label)}.*\s1\s", out, re.M), (label, out)
    assert re.search(r"^  TOTAL wall\s+\d+\.\d\d\s+\d+\.\d\d", out, re.M), out
