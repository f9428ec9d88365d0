#!/usr/bin/env bash
# The trainer bench at Qwen3-1.7B's shape (random weights, bf16 autocast over fp32 weights) on one GPU:
# ONE prepared script for a bare device machine with this repo copied and the wheels of trl, datasets,
# transformers, multiprocess, dill, fsspec in .whl/ (carry ".whl": it is git-ignored).
#
#   bash bench/gpu_check.sh                     # ~5 min on an H100/H200; results + log under $OUT
#   QUICK=1 bash bench/gpu_check.sh             # fewer steps/rows (~3 min)
#   BENCH_DEVICE=cpu bash bench/gpu_check.sh    # the dry run: the same script and code path at the toy shape
#                                               # on a CPU (no GPU; wheels optional; .venv's python if present)
#
# Steps: GPU name; wheels into /tmp/site; versions and the optional extras (vllm, flash_attn, deepspeed: what
# the rollout engine and the attention kernel will use); a toy-shape pass of the same code path (~30 s on a GPU,
# so a code error costs seconds, not the lease); then `python3 -m bench --only trainer` with
# BENCH_TRAINER_SHAPE=qwen3-1.7b BENCH_DEVICE=cuda. Every ratio of issue 13's targets is a row of the table the
# bench prints ("target ..." rows: ratio >= 1 = met), and the JSON under $OUT holds them all.
# Needs on the machine: python3 with torch (CUDA), accelerate, tokenizers, safetensors, huggingface_hub, jinja2,
# numpy. No network, no Hub, no MiniLM, no litellm.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench-gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
t0=$(date +%s)
stamp() { echo "== $(($(date +%s) - t0)) s: $*"; }

DEVICE=${BENCH_DEVICE:-cuda}
PY=${PYTHON:-python3}
if [ "$DEVICE" = cuda ]; then
  stamp "GPU"
  nvidia-smi -L
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
else
  stamp "dry run on the CPU (BENCH_DEVICE=$DEVICE): the toy shape only"
  if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
fi

if compgen -G ".whl/*.whl" > /dev/null; then
  stamp "wheels -> /tmp/site"
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || { echo "pip install failed"; exit 2; }
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$DEVICE" = cuda ]; then export TORCH_THREADS=${TORCH_THREADS:-8}; else export TORCH_THREADS=${TORCH_THREADS:-2}; fi

stamp "versions"
BENCH_DEVICE=$DEVICE $PY - <<'PYEOF' || exit 3
import importlib, importlib.util, os, sys
missing = []
for m in ["torch", "transformers", "trl", "datasets", "accelerate", "tokenizers", "safetensors", "huggingface_hub",
          "jinja2", "numpy"]:
    try:
        print(f"{m:16s}", getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:  # report every missing module at once
        print(f"{m:16s} MISSING ({e})")
        missing.append(m)
for extra in ["vllm", "flash_attn", "deepspeed"]:  # optional: what the rollout engine and attention can use
    print(f"{extra:16s}", "installed" if importlib.util.find_spec(extra) else "-")
import torch
print("python", sys.version.split()[0], "| cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
need_gpu = os.environ["BENCH_DEVICE"] == "cuda"
sys.exit(1 if missing or (need_gpu and not torch.cuda.is_available()) else 0)
PYEOF

stamp "toy shape on $DEVICE (same code path, seconds)"
BENCH_TRAINER_SHAPE=tiny BENCH_DEVICE=$DEVICE timeout 300 $PY -m bench --only trainer --quick \
    --out "$OUT/results_trainer_toy_$DEVICE.json" || { echo "toy-shape pass failed: not starting the 1.7B run"; exit 4; }
if [ "$DEVICE" != cuda ]; then
  stamp "dry run done (rc 0): on a GPU machine the Qwen3-1.7B shape runs next"
  exit 0
fi

stamp "Qwen3-1.7B shape, random weights, bf16 autocast over fp32 weights"
BENCH_TRAINER_SHAPE=qwen3-1.7b BENCH_DEVICE=cuda timeout "${BENCH_TIMEOUT:-420}" $PY -m bench --only trainer \
    ${QUICK:+--quick} --out "$OUT/results_trainer_gpu.json"
rc=$?
nvidia-smi --query-gpu=memory.used --format=csv
stamp "done (rc $rc)"
exit $rc
