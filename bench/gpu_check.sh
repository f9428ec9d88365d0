#!/usr/bin/env bash
# The trainer bench at Qwen3-1.7B's shape (random weights, bf16, activation checkpointing) on one
# GPU: ONE prepared script for a bare device machine with this repo copied and the wheels of
# trl, datasets, transformers, multiprocess, dill, fsspec in .whl/ (carry ".whl": it is git-ignored).
#
#   bash bench/gpu_check.sh            # ~4-5 min on an H100; results + log under $OUT
#   QUICK=1 bash bench/gpu_check.sh    # fewer steps/rows (~2-3 min)
#
# Steps: GPU name; wheels into /tmp/site; versions (fails early on a missing module); a toy-shape
# pass of the same code path on CUDA (~30 s, so a code error costs seconds, not the lease); then
# `python3 -m bench --only trainer` with BENCH_TRAINER_SHAPE=qwen3-1.7b BENCH_DEVICE=cuda.
# Needs on the machine: python3 with torch (CUDA), accelerate, tokenizers, safetensors,
# huggingface_hub, jinja2, numpy. No network, no Hub, no MiniLM, no litellm.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench-gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
t0=$(date +%s)
stamp() { echo "== $(($(date +%s) - t0)) s: $*"; }

stamp "GPU"
nvidia-smi -L
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv

stamp "wheels -> /tmp/site"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || { echo "pip install failed"; exit 2; }
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCH_THREADS=${TORCH_THREADS:-8}

stamp "versions"
python3 - <<'EOF' || exit 3
import importlib, sys
missing = []
for m in ["torch", "transformers", "trl", "datasets", "accelerate", "tokenizers", "safetensors", "huggingface_hub",
          "jinja2", "numpy"]:
    try:
        print(f"{m:16s}", getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:  # report every missing module at once
        print(f"{m:16s} MISSING ({e})")
        missing.append(m)
import torch
print("python", sys.version.split()[0], "| cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
sys.exit(1 if missing or not torch.cuda.is_available() else 0)
EOF

stamp "toy shape on CUDA (same code path, seconds)"
BENCH_TRAINER_SHAPE=tiny BENCH_DEVICE=cuda timeout 150 python3 -m bench --only trainer --quick \
    --out "$OUT/results_trainer_toy_cuda.json" || { echo "toy-shape CUDA pass failed: not starting the 1.7B run"; exit 4; }

stamp "Qwen3-1.7B shape, random weights, bf16 + activation checkpointing"
BENCH_TRAINER_SHAPE=qwen3-1.7b BENCH_DEVICE=cuda timeout "${BENCH_TIMEOUT:-420}" python3 -m bench --only trainer \
    ${QUICK:+--quick} --out "$OUT/results_trainer_gpu.json"
rc=$?
nvidia-smi --query-gpu=memory.used --format=csv
stamp "done (rc $rc)"
exit $rc
