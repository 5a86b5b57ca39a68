#!/usr/bin/env bash
# The GPU checks, as one short script for a lent GPU machine (run from the repo root after `make setup`):
# the gpu-marked tests (bf16 training; DDP over two GPUs when there are two) and the LoRA training-step
# benchmark on CUDA. Prints what it ran; exits non-zero when a test fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
  MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count())"
"$PY" -m pytest -q -m gpu tests/ -p no:cacheprovider
rc=$?
"$PY" bench/lora_step.py --device cuda --quick || rc=$?
exit $rc
