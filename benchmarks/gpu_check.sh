#!/usr/bin/env bash
# The GPU check of issue 13, one script for one GPU machine, under 8 minutes:
#
#   bash benchmarks/gpu_check.sh OUT          # on the GPU machine; every result lands in OUT (6 files)
#   GPU_CHECK_SIZE=toy bash benchmarks/gpu_check.sh OUT   # the same steps at toy size, on a CPU too (the tests)
#
# 1. installs what the machine lacks (deepspeed, liger-kernel, trl, datasets, transformers >= 5.23; flash-attn only
#    as a ready wheel, never compiled): from ./.whl when it is there (a machine without internet: make it with
#    benchmarks/gpu_wheels.sh and carry it), else from the package index. Skipped where no GPU is present.
# 2.-5. benchmarks/gpu_check.py: preference_step.py in bf16 at Llama-3 size, amapo train plainly / ZeRO-3 / FSDP2,
#    packed vs padded, the tables in OUT/gpu_check.md (its docstring says exactly what runs).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT}
SIZE=${GPU_CHECK_SIZE:-full}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

missing=()
for pair in deepspeed:deepspeed liger_kernel:liger-kernel trl:trl datasets:datasets; do
  "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
# amapo needs transformers >= 5.23 (amapo.hf_internals.TESTED_TRANSFORMERS); the H200 image had 5.17
"$PY" -c "import sys, transformers as t; sys.exit(tuple(map(int, t.__version__.split('.')[:2])) < (5, 23))" \
  2>/dev/null || missing+=("transformers==5.24.*")
if [ "${#missing[@]}" -gt 0 ] && command -v nvidia-smi >/dev/null; then
  echo "[gpu_check] installing: ${missing[*]}" | tee -a "$OUT/gpu_check.log"
  if [ -d .whl ]; then  # offline: every wheel carried, dependencies included; deepspeed builds from its sdist
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/gpu-check-site \
      .whl/* 2>&1 | tail -5 | tee -a "$OUT/gpu_check.log"
    export PYTHONPATH="$PYTHONPATH:/tmp/gpu-check-site"
  else
    "$PY" -m pip install -q "${missing[@]}" 2>&1 | tail -5 | tee -a "$OUT/gpu_check.log"
    "$PY" -m pip install -q --only-binary :all: flash-attn 2>/dev/null || echo "[gpu_check] flash-attn: no wheel"
  fi
fi
"$PY" -c "import torch, transformers, accelerate; print('[gpu_check] torch', torch.__version__, 'transformers',
  transformers.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())" \
  | tee -a "$OUT/gpu_check.log"
exec "$PY" benchmarks/gpu_check.py "$OUT" --size "$SIZE"
