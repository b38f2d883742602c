#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh on a GPU machine that reaches no package index (Python 3.12, x86-64 Linux):
#   bash benchmarks/gpu_wheels.sh          # fills ./.whl (git-ignored, about 40 MiB) with benchmarks/gpu_wheels.txt;
#                                          # carry it
# Then checks that every carried wheel's requirements are met by the image or another carried wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python benchmarks/gpu_wheels.py download .whl
