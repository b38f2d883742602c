#!/usr/bin/env bash
# The GPU check, in two commands that each end within 6 minutes on one H200 (benchmarks/gpu_check.py's docstring says
# what each part runs and how it is time-boxed):
#
#   bash benchmarks/gpu_check.sh 1 OUT    # part 1: the benchmark matrix and the profile (7 files in OUT)
#   bash benchmarks/gpu_check.sh 2 OUT    # part 2: ZeRO-3 / FSDP2 / plain, packed vs padded, the default amapo train
#   GPU_CHECK_SIZE=toy bash benchmarks/gpu_check.sh 1 OUT   # the same at toy size, on a CPU too (the tests)
#
# First it installs what the machine lacks (deepspeed, liger-kernel, trl, datasets, transformers >= 5.23 and what
# they need; flash-attn only as a ready wheel, never compiled): from ./.whl when it is there (a machine without
# internet: make it with benchmarks/gpu_wheels.sh and carry it), else from the package index. Skipped where no GPU is
# present. The time it takes counts against the part's 6 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:?usage: bash benchmarks/gpu_check.sh 1|2 OUT}
OUT=${2:?usage: bash benchmarks/gpu_check.sh 1|2 OUT}
SIZE=${GPU_CHECK_SIZE:-full}
PY=${PYTHON:-python3}
TOTAL=${GPU_CHECK_SECONDS:-345}  # of the 360 s a part may take, 15 s kept for starting and returning files
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

missing=()
for pair in deepspeed:deepspeed liger_kernel:liger-kernel trl:trl datasets:datasets pydantic:pydantic; do
  "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
# amapo needs transformers >= 5.23 (amapo.hf_internals.TESTED_TRANSFORMERS); the H200 image had 5.17
"$PY" -c "import sys, transformers as t; sys.exit(tuple(map(int, t.__version__.split('.')[:2])) < (5, 23))" \
  2>/dev/null || missing+=("transformers==5.24.*")
if [ "${#missing[@]}" -gt 0 ] && command -v nvidia-smi >/dev/null; then
  echo "[gpu_check] installing: ${missing[*]}" | tee -a "$OUT/gpu_check.log"
  if [ -d .whl ]; then  # offline: the carried wheel set (benchmarks/gpu_wheels.txt), dependencies included
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site \
      .whl/*.whl 2>&1 | tail -5 | tee -a "$OUT/gpu_check.log"
    export PYTHONPATH="$PYTHONPATH:/tmp/gpu-check-site"
  else
    "$PY" -m pip install -q "${missing[@]}" 2>&1 | tail -5 | tee -a "$OUT/gpu_check.log"
    "$PY" -m pip install -q --only-binary :all: flash-attn 2>/dev/null || echo "[gpu_check] flash-attn: no wheel"
  fi
elif [ -d /tmp/gpu-check-site ]; then  # installed by the other part on this machine
  export PYTHONPATH="$PYTHONPATH:/tmp/gpu-check-site"
fi
"$PY" -c "import torch, transformers, accelerate; print('[gpu_check] torch', torch.__version__, 'transformers',
  transformers.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())" \
  | tee -a "$OUT/gpu_check.log"
DEADLINE=$((TOTAL - SECONDS))
[ "$SIZE" = toy ] && DEADLINE=900  # CPUs are slower; the test has its own timeout
exec "$PY" benchmarks/gpu_check.py "$OUT" --part "$PART" --size "$SIZE" --deadline "$DEADLINE"
