"""Make a selection's test ids collectable under the shim.

A few parametrisation ids of HF PEFT's tests depend on which config classes exist, e.g.
`test_config_layers_to_transform_index_zero[LoraConfig-mandatory_kwargs13]` numbers LoraConfig by its
position among the config classes that accept `layers_pattern`; under the shim most classes are
placeholders, so the same test with the same parameters is collected as `[LoraConfig-mandatory_kwargs0]`,
and pytest refuses the whole run for the unknown id. This collects the selection's test functions
under the shim and maps each such id to the collected id that differs only in that index.

usage: resolve_ids.py SELECTION COLLECTED_IDS RESOLVED_OUT RENAMES_OUT
  COLLECTED_IDS: output of `pytest --collect-only -q` on the selection's test functions.
  Writes the runnable selection and a tsv `resolved-id <TAB> original-id` of the renamed ids; ids
  that match nothing are left out of the run and listed on stderr (they count as not passed).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict


def normalise(test_id: str) -> str:
    return re.sub(r"mandatory_kwargs\d+", "mandatory_kwargs#", test_id)


def main() -> None:
    selection, collected_path, resolved_out, renames_out = sys.argv[1:5]
    with open(selection) as fh:
        wanted = [line.strip() for line in fh if line.strip()]
    with open(collected_path) as fh:
        collected = {line.strip() for line in fh if "::" in line}
    by_normal: dict[str, list[str]] = defaultdict(list)
    for test_id in collected:
        by_normal[normalise(test_id)].append(test_id)
    resolved, renames, lost = [], [], []
    for test_id in wanted:
        if test_id in collected:
            resolved.append(test_id)
            continue
        candidates = by_normal.get(normalise(test_id), [])
        if len(candidates) == 1:
            resolved.append(candidates[0])
            renames.append(f"{candidates[0]}\t{test_id}")
        else:
            lost.append(test_id)
    with open(resolved_out, "w") as fh:
        fh.write("\n".join(resolved) + "\n")
    with open(renames_out, "w") as fh:
        fh.write("\n".join(renames) + ("\n" if renames else ""))
    for test_id in lost:
        print(f"not collectable under the shim (counted as not passed): {test_id}", file=sys.stderr)
    for line in renames:
        print(f"collected under another parametrisation id: {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
