"""The benchmark script runs end to end at toy size, and amapo's SimPO step-1 loss equals TRL's CPOTrainer's on
the same batch (the "identical losses" half of issue 7; speed and memory are measured in BENCHMARKS.md only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "preference_step.py"


def test_toy_benchmark_gives_amapo_and_trl_the_same_simpo_loss(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "toy.json"
    command = [
        sys.executable, str(SCRIPT), "--vocab", "300", "--min_len", "24", "--max_len", "48", "--batch", "4",
        "--steps", "1", "--warmup", "0", "--rounds", "1", "--frameworks", "amapo-simpo", "trl-cpo-simpo",
        "--no_losscheck", "--threads", "1", "--out", str(out), "--workdir", str(tmp_path / "work"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(out.read_text())["vocabs"]["300"]["summary"]
    ours, trl = summary["amapo-simpo"], summary["trl-cpo-simpo"]
    assert ours["rounds_ok"] == trl["rounds_ok"] == 1
    assert ours["tokens_per_s"] > 0 and ours["peak_rss"] > 0
    assert ours["step1_loss"] == pytest.approx(trl["step1_loss"], rel=1e-5)
    assert "| amapo-simpo |" in out.with_suffix(".md").read_text()
