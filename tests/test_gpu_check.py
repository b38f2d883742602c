"""``benchmarks/gpu_check.sh`` at toy size on CPU (issue 13): every step a GPU session will run (the benchmark, amapo
train plainly / under ZeRO-3 / under FSDP2, packed vs padded) runs here first, and the numbers it reports agree, so
that the GPU's minutes go to running, not debugging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_at_toy_size_and_the_engines_agree(tmp_path):
    pytest.importorskip("deepspeed")
    pytest.importorskip("trl")
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_SIZE": "toy", "GPU_CHECK_FSDP_PROGRAM": str(REPO / "tests" / "fsdp_on_cpu.py"),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "TMPDIR": str(tmp_path)}  # fmt: skip
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out)], env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.json",
        "gpu_check.log",
        "gpu_check.md",
        "preference_step.json",
        "preference_step.md",
    ]  # fmt: skip  (a device machine returns at most 8 files)

    report = json.loads((out / "gpu_check.json").read_text())
    summary = report["steps"]["benchmark"]["summary"]["300"]
    assert set(summary) == {"amapo-amapo", "trl-cpo-simpo"}
    assert all(s["rounds_ok"] == 1 and s["tokens_per_s"] > 0 for s in summary.values())

    engines = report["steps"]["engines"]["runs"]
    assert all(run["ok"] and len(run["losses"]) == 5 for run in engines.values())
    for name in ("zero3", "fsdp2"):
        assert engines[name]["max_loss_diff"] < 1e-5 and engines[name]["max_weight_diff"] < 1e-6, name
        assert engines[name]["same_tensors"]

    layouts = report["steps"]["layouts"]
    assert layouts["attention"] == "sdpa"  # no flash-attention on a CPU
    assert layouts["runs"]["packed"]["max_loss_diff"] < 1e-5 and layouts["runs"]["packed"]["max_weight_diff"] < 1e-6

    tables = (out / "gpu_check.md").read_text()
    assert "| zero3 | True |" in tables and "| fsdp2 | True |" in tables and "| packed | True |" in tables
    assert "| amapo-amapo |" in tables
