"""The benchmark script runs end to end at toy size, and amapo's SimPO step-1 loss equals TRL's CPOTrainer's on
the same batch (the "identical losses" half of issue 7; speed and memory are measured in BENCHMARKS.md only); its
measuring parts (memory phases, plans, time budget, headroom, the profile's categories) on known inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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
    entry = json.loads(out.read_text())["cases"]["vocab 300, 24-48 words"]
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


def test_a_plan_runs_its_groups_in_order_and_the_time_budget_leaves_out_what_would_not_fit():
    from prefstep.plan import TimeBudget, parse_plan, plan_frameworks, rotated

    class Args:
        min_len, max_len, rounds = 10, 20, 3

    text = "1024:2048 x2: amapo-amapo trl-cpo-simpo liger-simpo; 4096:8192 x1: amapo-amapo trl-dpo"
    assert plan_frameworks(text) == ["amapo-amapo", "trl-cpo-simpo", "liger-simpo", "trl-dpo"]
    groups = parse_plan(text, Args, ["amapo-amapo", "trl-cpo-simpo", "trl-dpo"])  # liger-simpo cannot run here
    assert [(g.min_len, g.max_len, g.rounds, g.frameworks) for g in groups] == [
        (1024, 2048, 2, ["amapo-amapo", "trl-cpo-simpo"]),
        (4096, 8192, 1, ["amapo-amapo", "trl-dpo"]),
    ]
    assert [(g.min_len, g.max_len, g.rounds) for g in parse_plan(None, Args, ["x"])] == [(10, 20, 3)]
    assert rotated(["a", "b", "c"], 1) == ["b", "c", "a"]
    with pytest.raises(SystemExit, match="is not 'MIN:MAX xROUNDS"):
        parse_plan("1024-2048: amapo-amapo", Args, ["amapo-amapo"])

    budget = TimeBudget(100.0, start=time.perf_counter() - 70)  # 30 s left
    assert budget.allows("short", "amapo-amapo")  # nothing known yet: it runs (with the time left as its timeout)
    budget.record("short", "amapo-amapo", 20.0)
    budget.record("long", "trl-dpo", 45.0)
    assert budget.allows("short", "trl-cpo-simpo")  # another framework of the case took 20 s
    assert not budget.allows("long", "amapo-amapo")  # a worker of that case took 45 s
    skipped = budget.not_run("long", "amapo-amapo")
    assert skipped["skipped"] and not skipped["ok"] and "takes about 45 s" in skipped["error"]


def test_skipped_workers_read_not_run_and_out_of_memory_is_told_from_other_failures():
    from prefstep.report import is_out_of_memory, summarize, vocab_table

    data = {"model": {"params_nonembedding": 10, "hidden_size": 4, "vocab": 8, "num_hidden_layers": 1}}
    steps = [{"tokens": 100, "response_tokens": 50, "sum_len_sq": 1000}] * 2
    oom = {"ok": False, "error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 62.63 GiB"}
    assert is_out_of_memory(oom) and is_out_of_memory({"ok": False, "error": "killed by signal 9 (likely out of mem"})
    assert not is_out_of_memory({"ok": False, "error": "ValueError: bad"})
    summaries = {
        "amapo-amapo": summarize("amapo-amapo", [{"ok": False, "skipped": True, "error": "not run: 3 s"}], steps,
                                 data, peak=1e9),
        "trl-cpo-simpo": summarize("trl-cpo-simpo", [oom], steps, data, peak=1e9),
    }  # fmt: skip
    assert summaries["amapo-amapo"]["not_run"] and summaries["trl-cpo-simpo"]["out_of_memory"]
    table = vocab_table(8, summaries, cuda=True)
    assert "| amapo-amapo | not run |" in table and "| trl-cpo-simpo | FAILED: OutOfMemoryError" in table


def test_a_set_up_only_entry_reads_set_up_ok_and_trl_dpo_s_fused_head_is_reported_as_seen():
    """``--rehearse`` (prefstep/setup_only.py): an entry this machine cannot run is neither measured nor a failure;
    TRL DPO's default fused LM head is reported active only when it was patched in and called."""
    from prefstep.report import fused_head_lines, headroom_section, progress_text, summarize, vocab_table

    data = {"model": {"params_nonembedding": 10, "hidden_size": 4, "vocab": 8, "num_hidden_layers": 1}}
    steps = [{"tokens": 100, "response_tokens": 50, "sum_len_sq": 1000}] * 2
    rehearsed = {"ok": True, "setup_only": True, "setup": "set-up ok: stopped before the first step",
                 "first_batch": {"tokens": 319}, "notes": ["liger-kernel stand-in (not installed here)"],
                 "process_wall_s": 12.0}  # fmt: skip
    summary = summarize("trl-cpo-simpo-liger", [rehearsed], steps, data, peak=1e9)
    assert summary["setup_only"] and not summary.get("failed") and summary["first_batch"]["tokens"] == 319
    assert "| trl-cpo-simpo-liger | set-up ok (set-up only: cannot run here) |" in vocab_table(8, {
        "trl-cpo-simpo-liger": summary}, cuda=False)  # fmt: skip
    assert progress_text(rehearsed) == "set-up ok (set-up only: cannot run here; 12 s)"
    cases = {k: {"min_len": n, "max_len": 2 * n, "summary": {"trl-cpo-simpo-liger": summary}} for k, n in
             (("short", 24), ("long", 64))}  # fmt: skip
    assert "| trl-cpo-simpo-liger | set-up only | set-up only |" in headroom_section(cases, {"ram_gb": 8}, cuda=False)

    def dpo(head):
        return {"trl-dpo": {"settings": {"fused_lm_head": head}}}

    (line,) = fused_head_lines(dpo({"patched": True, "triton": True, "calls_with_fused_lm_head": 4}))
    assert line.startswith("trl-dpo: fused LM head (TRL add_fused_lm_head) ACTIVE") and "Triton kernel" in line
    (line,) = fused_head_lines(dpo({"patched": True, "triton": False, "calls_with_fused_lm_head": 0}))
    assert "NOT ACTIVE" in line and "torch fallback" in line


def test_headroom_is_measured_where_a_length_ran_out_of_memory_and_extrapolated_where_none_did():
    from prefstep.report import headroom_estimate, headroom_section

    gib = 2**30
    capacity = 140 * gib
    longest, how = headroom_estimate([(2048, 40 * gib), (8192, 100 * gib)], None, capacity)
    assert longest == "~12,288" and how.startswith("extrapolated linearly from 2,048 and 8,192 words")
    assert headroom_estimate([(2048, 60 * gib)], {"max_len": 8192}, capacity)[0] == "2,048 to 8,192"
    assert headroom_estimate([], {"max_len": 2048}, capacity)[0] == "< 2,048"
    assert headroom_estimate([(2048, 60 * gib)], None, capacity)[1] == "one length ran: no extrapolation"

    def case(min_len, max_len, summary):
        return {"min_len": min_len, "max_len": max_len, "summary": summary}

    cases = {
        "short": case(1024, 2048, {"amapo-amapo": {"cuda_max_allocated": 40 * gib},
                                   "trl-cpo-simpo": {"cuda_max_allocated": 66 * gib}}),
        "long": case(4096, 8192, {"amapo-amapo": {"cuda_max_allocated": 100 * gib},
                                  "trl-cpo-simpo": {"failed": True, "out_of_memory": True}}),
    }  # fmt: skip
    table = headroom_section(cases, {"gpu_memory_gb": 140}, cuda=True)
    assert "| amapo-amapo | 40.0 GiB | 100.0 GiB | ~12,288 |" in table
    assert "| trl-cpo-simpo | 66.0 GiB | out of memory | 2,048 to 8,192 | measured" in table
    assert headroom_section({"short": cases["short"]}, {"gpu_memory_gb": 140}, cuda=True) == ""


def kernel_trace(vocab: int) -> dict:
    """A hand-made GPU trace: one profiled step of 1,000 us holding one kernel of each category (us)."""

    def op(name, ts, dur, ext, dims=None, tid=1):
        return {"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid,
                "args": {"External id": ext, **({"Input Dims": dims} if dims else {})}}  # fmt: skip

    def kernel(name, ts, dur, ext, cat="kernel"):
        return {
            "ph": "X",
            "cat": cat,
            "name": name,
            "ts": ts,
            "dur": dur,
            "pid": 0,
            "tid": 7,
            "args": {"External id": ext},
        }

    events = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#3", "ts": 0, "dur": 1000, "pid": 1, "tid": 1},
        op("aten::scaled_dot_product_attention", 10, 30, 1), op("aten::_flash_attention_forward", 12, 20, 2),
        op("aten::mm", 50, 10, 3, [[64, 512], [512, 512]]),
        op("aten::mm", 70, 10, 4, [[64, 512], [512, vocab]]),
        op("aten::rms_norm", 90, 10, 5),
        {"ph": "X", "cat": "user_annotation", "name": "Optimizer.step#AdamW.step", "ts": 110, "dur": 40, "pid": 1,
         "tid": 1},
        op("aten::_foreach_add_", 115, 20, 6),
        op("aten::copy_", 160, 5, 7),
        op("autograd::engine::evaluate_function: MmBackward0", 200, 50, 8, tid=2),
        op("aten::mm", 205, 30, 9, [[vocab, 64], [64, 512]], tid=2),
        kernel("flash_fwd_kernel", 100, 100, 2), kernel("sm90_xmma_gemm_bf16", 210, 50, 3),
        kernel("sm90_xmma_gemm_bf16", 270, 200, 4), kernel("vectorized_elementwise_kernel<rms>", 480, 20, 5),
        kernel("multi_tensor_apply_kernel", 510, 40, 6), kernel("Memcpy DtoD", 560, 10, 7, cat="gpu_memcpy"),
        kernel("sm90_xmma_gemm_bf16", 600, 200, 9),
    ]  # fmt: skip
    return {"traceEvents": events}


def test_the_profile_puts_each_kernel_in_its_category_and_the_idle_gpu_in_gaps(tmp_path):
    from prefstep.profile import analyze_trace

    path = tmp_path / "trace.json"
    path.write_text(json.dumps(kernel_trace(vocab=128256)))
    result = analyze_trace(path, vocab=128256)
    ms = {k: round(v * 1000) for k, v in result["ms_per_step"].items()}  # us per step
    assert ms == {"attention": 100, "layer matmuls": 50, "LM head / log-probs": 400,
                  "elementwise (norms, activations, RoPE)": 20, "optimizer": 40, "copies": 10,
                  "CPU-side gaps": 1000 - 620}  # fmt: skip
    assert result["wall_ms_per_step"] == 1.0 and sum(result["share"].values()) == pytest.approx(1.0)
    top = result["top"][0]
    assert (top["name"], top["category"], top["count"]) == ("sm90_xmma_gemm_bf16", "LM head / log-probs", 2)


def test_the_cli_latency_script_times_the_commands_it_names_and_reports_their_exit_and_error():
    done = subprocess.run([sys.executable, str(SCRIPT.parent / "cli_latency.py"), "--runs", "1", "--only=--beta"],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == 1 and rows[0].startswith("| `amapo train --beta inf` |")
    assert "| 2 | amapo train: error: --beta must be a finite number, got inf |" in rows[0]


def test_the_cli_latency_script_makes_the_files_its_mistakes_need():
    script = str(SCRIPT.parent / "cli_latency.py")
    done = subprocess.run([sys.executable, script, "--runs", "1", "--only=same-after-truncation"],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == 1
    assert "| 2 | amapo train: error: row 0, field 'rejected': identical to chosen after trunc" in rows[0]


def test_the_exit_stress_script_tells_an_abort_at_exit_from_a_run_that_failed():
    """Its classification on the logs CI and this machine printed (benchmarks/distributed_exit.py)."""
    from distributed_exit import outcome

    summary = "│ train_loss               │  1.614 │\n"
    abort = ("terminate called without an active exception\nFatal Python error: Aborted\n"
             "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
             "  exitcode  : -15 (pid: 27491)  (SIGTERM)\n  traceback : Signal 15 (SIGTERM) received by PID 27491\n"
             "  exitcode  : -6 (pid: 27492)  (SIGABRT)\n"
             "  traceback : Signal 6 (SIGABRT) received by PID 27492\n")  # fmt: skip
    run = lambda code, out, err: subprocess.CompletedProcess([], code, out, err)  # noqa: E731
    assert outcome(run(0, summary, "")) == ("ok", "")
    assert outcome(run(1, summary, abort)) == ("aborted", "terminate called without an active exception")
    # the same signal before the run finished is a failure, as is an error line
    assert outcome(run(1, "", abort))[0] == "failed"
    assert outcome(run(1, "", "ValueError: bad\n")) == ("failed", "ValueError: bad")
