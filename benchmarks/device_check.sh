#!/usr/bin/env bash
# The GPU device check, one script, under 8 minutes on one GPU: (a) extraction vs bare-forward tokens/s for a
# GPT-2-small-sized and a 1B-sized random model, (b) vanilla and myopic training tokens/s (124M config, batch
# 512 x 64, bf16) and their ratio, (c) the default probe grid's wall time. Writes benchmarks/results/device.txt.
#
#   bash benchmarks/device_check.sh              # on a machine with an NVIDIA GPU and a CUDA build of torch
#   bash benchmarks/device_check.sh --skip c     # parts to skip
#   .venv/bin/python benchmarks/device_check.py --dry-run --out /tmp/device.txt   # the same steps, toy size, CPU
#
# Without a GPU it stops at once with one line and exit status 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
fail() { echo "device_check: $*" >&2; exit 2; }
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 || fail "no NVIDIA GPU here (nvidia-smi finds none); run this on a GPU machine"
"$PYTHON" -c "import torch, transformers, transformer_lens, probes" 2>/dev/null ||
    fail "$PYTHON cannot import torch, transformers, transformer_lens and probes: install the project (with a CUDA torch) first"
"$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" ||
    fail "torch sees no CUDA device (a CPU-only torch build?)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec timeout 480 env HF_HUB_OFFLINE=1 TQDM_DISABLE=1 "$PYTHON" benchmarks/device_check.py "$@"
