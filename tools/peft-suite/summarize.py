"""Pass counts of a peft-suite run: HF PEFT's own tests against peftcore, per selection.

usage: summarize.py [--exclusions FILE] [--real REAL.tsv] --out OUT_DIR SELECTION...

For each selection file the run left OUT_DIR/<name>.tsv (outcome, test id, first error line). The
denominator is the cases of the selection that pass on real peft: all of them for
`lora_core_realpass.txt` (that is how it was built), otherwise those marked passed in `--real`
(a tsv of the kit's `run.sh real`), or, without it, the whole selection (said so in the output).
Cases listed in the exclusions file (tests that read HF PEFT internals rather than behaviour, each
with its reason) are reported separately, and the rate is given with and without them.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path


def tsv_id(selection_id: str) -> str:
    """`tests/test_x.py::Class::test[p]` → `Class::test[p]`; `tests/test_x.py::test[p]` → `test_x::test[p]`."""
    path, _, rest = selection_id.partition("::")
    if "::" in rest:
        return rest
    return f"{Path(path).stem}::{rest}"


def read_tsv(path: Path) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            out[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "")
    return out


def read_exclusions(path: Path | None) -> dict[str, str]:
    """Selection id → reason, from the rows `| \\`<id>\\` | <reason> |` of a markdown table."""
    if path is None or not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|\s*(.*?)\s*\|\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("selections", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--exclusions", type=Path)
    parser.add_argument("--real", type=Path, help="tsv of the same selections run against real peft")
    args = parser.parse_args()
    excluded = read_exclusions(args.exclusions)
    real = read_tsv(args.real) if args.real else None
    for selection in args.selections:
        ids = [line.strip() for line in selection.read_text().splitlines() if line.strip()]
        result_path = args.out / f"{selection.stem}.tsv"
        shim = read_tsv(result_path) if result_path.exists() else {}
        renames = args.out / f"{selection.stem}.renames"
        if renames.exists():  # ids collected under another parametrisation index (resolve_ids.py)
            for line in renames.read_text().splitlines():
                resolved, original = line.split("\t")
                if tsv_id(resolved) in shim:
                    shim[tsv_id(original)] = shim[tsv_id(resolved)]
        if selection.stem.endswith("realpass"):
            denominator, basis = ids, "all pass on real peft"
        elif real is not None:
            denominator = [i for i in ids if real.get(tsv_id(i), ("missing",))[0] == "passed"]
            basis = f"pass on real peft per {args.real}"
        else:
            denominator, basis = (
                ids,
                "the whole selection (no real-peft run given: not all of it passes there)",
            )
        outcomes = collections.Counter(shim.get(tsv_id(i), ("not run", ""))[0] for i in denominator)
        passed = outcomes["passed"]
        excl = [i for i in denominator if i in excluded]
        excl_passed = sum(1 for i in excl if shim.get(tsv_id(i), ("",))[0] == "passed")
        kept = len(denominator) - len(excl)
        kept_passed = passed - excl_passed
        print(f"\n{selection.name}: {len(ids)} cases; denominator {len(denominator)} ({basis})")
        print(f"  outcomes under peftcore: {dict(outcomes)}")
        print(f"  PASS {passed} / {len(denominator)} = {100 * passed / max(1, len(denominator)):.1f}%")
        if excl:
            print(
                f"  excluding {len(excl)} cases that read HF internals: PASS {kept_passed} / {kept} = "
                f"{100 * kept_passed / max(1, kept):.1f}%"
            )
        failures = collections.Counter(
            re.sub(r"0x[0-9a-f]+|\d+(\.\d+)?", "#", shim.get(tsv_id(i), ("", "not run"))[1])[:140]
            for i in denominator
            if shim.get(tsv_id(i), ("",))[0] != "passed" and i not in excluded
        )
        for message, count in failures.most_common(15):
            print(f"  {count:5d}  {message}")


if __name__ == "__main__":
    main()
