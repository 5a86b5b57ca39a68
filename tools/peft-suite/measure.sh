#!/bin/bash
# Runs Hugging Face PEFT's own tests against peftcore with the kit of ../shared/peft-suite (see its
# README) and this repository's shim (tools/peft-suite/shim, overlaid on a temporary copy of the kit),
# in pieces, then prints the pass count against real peft's. A measurement: not part of `make test`.
#
# usage: tools/peft-suite/measure.sh [SELECTION...]      (from the repository root)
#   SELECTION: selection files of the kit; default: selections/lora_core_realpass.txt
#   PEFT_SUITE_KIT (../shared/peft-suite), PEFT_SUITE_OUT (peft-suite-out), PEFT_SUITE_PIECES (5),
#   PT_TIMEOUT (per-test timeout, s) are read from the environment; PEFT_SUITE_REAL (a tsv of the kit's
#   `run.sh real` over the same selections) makes the denominator the cases that pass on real peft.
set -u
KIT=$(realpath "${PEFT_SUITE_KIT:-../shared/peft-suite}")
OUT=$(realpath -m "${PEFT_SUITE_OUT:-peft-suite-out}")
PIECES=${PEFT_SUITE_PIECES:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -gt 0 ] || set -- "$KIT/selections/lora_core_realpass.txt"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp -r "$KIT"/. "$WORK/kit"
cp -r "$HERE/shim"/. "$WORK/kit/shim"/
mkdir -p "$OUT"
PY=$(realpath -s .venv/bin/python)
for SEL in "$@"; do
  NAME=$(basename "$SEL" .txt)
  rm -f "$OUT/$NAME".*
  # Ids whose parametrisation index depends on the shim: collect the functions, map them (resolve_ids.py).
  grep . "$SEL" | sed 's/\[.*//' | sort -u > "$WORK/$NAME.functions"
  (cd "$WORK/kit" && PYTHONPATH="$WORK/kit/shim:$WORK/kit/stubs" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    CUDA_VISIBLE_DEVICES="" "$PY" -m pytest -p no:cacheprovider --collect-only -q "@$WORK/$NAME.functions" \
    > "$WORK/$NAME.collected" 2>/dev/null)
  "$PY" "$HERE/resolve_ids.py" "$SEL" "$WORK/$NAME.collected" "$WORK/$NAME.resolved" "$OUT/$NAME.renames"
  # Cases that once made pytest abort (unbounded recursion) run in a piece of their own.
  grep -v NoInfiniteRecursion "$WORK/$NAME.resolved" > "$WORK/$NAME.main"
  grep NoInfiniteRecursion "$WORK/$NAME.resolved" > "$WORK/$NAME.isolated" || true
  split -n "l/$PIECES" -d "$WORK/$NAME.main" "$WORK/$NAME.piece_"
  for PIECE in "$WORK/$NAME".piece_* "$WORK/$NAME.isolated"; do
    [ -s "$PIECE" ] || continue
    TAG=$(basename "$PIECE")
    echo "== $TAG ($(wc -l < "$PIECE") cases)" >&2
    "$WORK/kit/run.sh" shim "$PIECE" "$OUT/$TAG" --tb=line >&2
  done
  cat "$OUT/$NAME".*.tsv > "$OUT/$NAME.tsv"
done
REAL=()
[ -n "${PEFT_SUITE_REAL:-}" ] && REAL=(--real "$PEFT_SUITE_REAL")
"$PY" "$HERE/summarize.py" --exclusions docs/peft-suite-exclusions.md "${REAL[@]}" "$@" --out "$OUT"
