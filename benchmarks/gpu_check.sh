#!/usr/bin/env bash
# The GPU check, in two commands that each end within 6 minutes on one H100 or H200 (benchmarks/gpu_check.py's
# docstring says what each part runs and how it is time-boxed):
#
#   bash benchmarks/gpu_check.sh 1 OUT    # part 1: issue 26's options against TRL and Liger, 1-2k then 4-8k (5 files)
#   bash benchmarks/gpu_check.sh 2 OUT    # part 2: engines, layouts, the default train, CUDA tests, profile, sampling
#   GPU_CHECK_SIZE=toy bash benchmarks/gpu_check.sh 1 OUT   # the same at toy size, on a CPU too (the tests)
#
# First it installs what the machine lacks (deepspeed, liger-kernel, trl, datasets, transformers >= 5.23 and what
# they need; flash-attn only as a ready wheel, never compiled): from ./.whl when it is there (a machine without
# internet: make it with benchmarks/gpu_wheels.sh and carry it), else from the package index. Skipped where no GPU is
# present. The time it takes counts against the part's 6 minutes. Then benchmarks/gpu_imports.py imports everything the
# parts use, once: a failure ends the part there, with the reason in OUT/gpu_check.log.
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
SITE=/tmp/gpu-check-site
if [ "${#missing[@]}" -gt 0 ] && command -v nvidia-smi >/dev/null; then
  echo "[gpu_check] installing: ${missing[*]}" | tee -a "$OUT/gpu_check.log"
  if [ -d .whl ]; then  # offline: the carried wheel set (benchmarks/gpu_wheels.txt), dependencies included
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      .whl/*.whl 2>&1 | tail -5 | tee -a "$OUT/gpu_check.log"
  else
    "$PY" -m pip install -q "${missing[@]}" 2>&1 | tail -5 | tee -a "$OUT/gpu_check.log"
    "$PY" -m pip install -q --only-binary :all: flash-attn 2>/dev/null || echo "[gpu_check] flash-attn: no wheel"
  fi
fi
# The carried wheels go first on sys.path (PYTHONPATH comes before site-packages, and before anything the image's own
# PYTHONPATH names): transformers 5.24 must meet the carried huggingface-hub, not the image's (issue 34).
site_arg=()
if [ -d "$SITE" ]; then
  export PYTHONPATH="$SITE:$PYTHONPATH"
  site_arg=(--site "$SITE")
fi
# One import of everything the parts use, each version printed; a wheel that cannot import stops the part here, in
# seconds, with the reason (Liger-Kernel may be missing only without a GPU; flash-attn is optional).
TRL_EXPERIMENTAL_SILENCE=1 "$PY" benchmarks/gpu_imports.py "${site_arg[@]}" 2>&1 | tee -a "$OUT/gpu_check.log"
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
  echo "[gpu_check] part $PART not run: a required import failed (above; benchmarks/gpu_imports.py)" \
    | tee -a "$OUT/gpu_check.log" >&2
  exit 1
fi
DEADLINE=$((TOTAL - SECONDS))
[ "$SIZE" = toy ] && DEADLINE=900  # CPUs are slower; the test has its own timeout
exec "$PY" benchmarks/gpu_check.py "$OUT" --part "$PART" --size "$SIZE" --deadline "$DEADLINE"
