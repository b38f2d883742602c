"""The benchmark script runs end to end at toy size, and amapo's SimPO step-1 loss equals TRL's CPOTrainer's on
the same batch (the "identical losses" half of issue 7; speed and memory are measured in BENCHMARKS.md only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "preference_step.py"
sys.path.insert(0, str(SCRIPT.parent))


def test_toy_benchmark_gives_amapo_and_trl_the_same_simpo_loss(tmp_path):
    """Also: an unmeasured warm-up worker first, each worker's memory split into set-up, first step and steady
    steps, and ``--amapo_baseline`` running another checkout's amapo beside this one (here: this one again)."""
    pytest.importorskip("trl")
    out = tmp_path / "toy.json"
    command = [
        sys.executable, str(SCRIPT), "--vocab", "300", "--min_len", "24", "--max_len", "48", "--batch", "4",
        "--steps", "2", "--warmup", "0", "--rounds", "1", "--frameworks", "amapo-simpo", "trl-cpo-simpo",
        "--no_losscheck", "--threads", "1", "--out", str(out), "--workdir", str(tmp_path / "work"),
        "--amapo_baseline", str(REPO),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    entry = json.loads(out.read_text())["vocabs"]["300"]
    summary = entry["summary"]
    baseline = next(name for name in summary if name.startswith("amapo-simpo@"))
    assert list(summary) == ["amapo-simpo", baseline, "trl-cpo-simpo"]
    ours, trl = summary["amapo-simpo"], summary["trl-cpo-simpo"]
    assert all(s["rounds_ok"] == 1 for s in summary.values())
    assert ours["tokens_per_s"] > 0 and ours["peak_rss"] > 0
    assert ours["step1_loss"] == pytest.approx(trl["step1_loss"], rel=1e-5)
    assert summary[baseline]["step1_loss"] == ours["step1_loss"]
    assert entry["runs"][baseline][0]["amapo_source"] == str(REPO / "src")
    assert entry["warmup_worker"]["ok"] and entry["warmup_worker"]["framework"] == "amapo-simpo"
    assert all(len(runs) == 1 for runs in entry["runs"].values())  # the warm-up worker counts for nothing
    for s in summary.values():
        rss = s["memory"]["rss"]
        assert 0 < rss["first_step"] <= s["peak_rss"] and 0 < rss["steady"] <= s["peak_rss"]
        assert rss["first_over_steady"] == pytest.approx(rss["first_step"] / rss["steady"])
    table = out.with_suffix(".md").read_text()
    assert "| amapo-simpo |" in table and f"| {baseline} |" in table and "RSS first step / steady GiB" in table


def test_a_worker_reports_its_own_peak_rss_not_its_parents():
    """getrusage's ru_maxrss survives fork and exec on Linux: on the H200 every worker reported its parent's
    5.4 GB. The benchmark reads the worker's own high-water mark instead."""
    ballast = bytearray(600 * 2**20)  # the parent touches 600 MiB
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from prefstep.measure import peak_rss_bytes; print(peak_rss_bytes())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SCRIPT.parent,
                           check=True)  # fmt: skip
    assert int(child.stdout) < 300 * 2**20
    del ballast


def run_with_phases(first_step: float, steady: float) -> dict:
    gib = 2**30
    return {"ok": True, "peak_rss": int(max(first_step, steady) * gib), "measured_steps": [2], "step_times": [1.0],
            "losses": {"1": 0.7}, "batches": [], "memory_phases": {"setup": {"peak_rss": gib},
            "first_step": {"peak_rss": int(first_step * gib)}, "steady": {"peak_rss": int(steady * gib)}}}  # fmt: skip


def test_a_first_step_above_1_1x_the_steady_peak_is_flagged():
    from prefstep.report import summarize, vocab_table

    data = {"model": {"params_nonembedding": 10, "hidden_size": 4, "vocab": 8, "num_hidden_layers": 1}}
    steps = [{"tokens": 100, "response_tokens": 50, "sum_len_sq": 1000}] * 2
    summaries = {name: summarize(name, [run_with_phases(*peaks)], steps, data, peak=1e9) for name, peaks in
                 (("amapo-amapo", (11.67, 2.73)), ("trl-cpo-simpo", (14.0, 14.04)))}  # fmt: skip
    ours = summaries["amapo-amapo"]
    assert ours["memory"]["rss"]["first_over_steady"] == pytest.approx(11.67 / 2.73)
    assert any("first step needs 4.27x the steady rss peak" in w for w in ours["warnings"])
    assert not any("first step" in w for w in summaries["trl-cpo-simpo"]["warnings"])
    table = vocab_table(128256, summaries, cuda=False)
    assert "| 11.67 / 2.73 | 4.27x **over 1.1x** |" in table and "| 14.00 / 14.04 | 1.00x |" in table
