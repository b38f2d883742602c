#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh on a GPU machine that reaches no package index (Python 3.12, x86-64 Linux):
#   bash benchmarks/gpu_wheels.sh          # fills ./.whl (git-ignored); carry it to the machine
# Only what such a machine's image lacked (deepspeed's sdist: it builds without compiling anything).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform any)
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d .whl \
  "trl==1.16.*" "datasets>=4.0" "dill" "multiprocess" "liger-kernel" "hjson" "transformers==5.24.*"
pip download -q --no-deps --no-binary=deepspeed -d .whl "deepspeed==0.19.*"
ls -la .whl
