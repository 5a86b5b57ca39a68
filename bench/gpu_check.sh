#!/usr/bin/env bash
# The GPU checks, as one short script for a lent GPU machine, run from the repo root:
#   1. the gpu-marked tests (bf16 training; DDP over two GPUs when there are two), where pytest is there;
#   2. the LoRA training-step benchmark on CUDA (bf16 base weights);
#   3. QLoRA: the 4-bit training-step benchmark on CUDA (peftcore vs HF peft, peak memory vs bf16 LoRA),
#      where bitsandbytes is installed.
# Uses .venv/bin/python after `make setup`; on a bare machine (no .venv) the system python3 with
# PYTHONPATH=. runs the peftcore parts, and each part says when a missing package skips it.
# Prints what it ran; exits non-zero when a test or a benchmark fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
  MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
has() { "$PY" -c "import $1" >/dev/null 2>&1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count())"
rc=0
if has pytest; then
  echo "== gpu tests"
  "$PY" -m pytest -q -m gpu tests/ -p no:cacheprovider || rc=$?
else
  echo "== gpu tests: skipped (pytest not installed for $PY)"
fi
echo "== LoRA training step, CUDA bf16"
"$PY" bench/lora_step.py --device cuda --quick || rc=$?
if has bitsandbytes; then
  echo "== QLoRA 4-bit training step, CUDA"
  "$PY" bench/qlora_step.py --device cuda --quick || rc=$?
else
  echo "== QLoRA: skipped (bitsandbytes not installed for $PY)"
fi
exit $rc
