"""The one-way layering of the house, checked on the source and on a fresh interpreter.

peftcore/ never imports prefect, mlflow, datasets, evaluate or HF peft; flows/steps/ imports neither
prefect nor mlflow; only flows/tracking/ imports mlflow; nothing in flows/ imports HF peft (a
test-only oracle).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Top-level package names imported anywhere in the file (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    ("package", "forbidden", "allowed_under"),
    [
        ("peftcore", {"prefect", "mlflow", "datasets", "evaluate", "peft", "flows"}, None),
        ("flows/steps", {"prefect", "mlflow"}, None),
        ("flows", {"mlflow"}, "flows/tracking"),
        ("flows", {"peft"}, None),
    ],
)
def test_imports_point_downwards(package: str, forbidden: set[str], allowed_under: str | None) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & forbidden)
        for path in _files(package)
        if not (allowed_under and path.is_relative_to(ROOT / allowed_under))
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_scan_sees_imports() -> None:
    # Guards the test above against vacuous passes: the scan finds what is really there.
    assert "mlflow" in _imports(ROOT / "flows" / "tracking" / "__init__.py")
    assert "prefect" in _imports(ROOT / "flows" / "finetune.py")
    assert len(_files("peftcore")) > 10 and len(_files("flows/steps")) >= 6


def test_importing_peftcore_loads_no_pipeline_package() -> None:
    code = (
        "import sys, peftcore; "
        "print(sorted(m for m in ('prefect', 'mlflow', 'datasets', 'evaluate', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
