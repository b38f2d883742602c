"""``benchmarks/gpu_check.sh`` at toy size on CPU (issues 13, 25 and 34): both parts a GPU session will run (part 1:
issue 26's matrix of amapo's options against TRL and Liger at two lengths; part 2: amapo train plainly / under ZeRO-3 /
under FSDP2, packed vs padded, the default run, the profile, sampling) run here first, within their file limit, and
the numbers they report agree, so that the GPU's minutes go to running, not debugging. Every entry of the full plan
is in the toy plan; the ones a CPU cannot run (flex's backward, Liger's Triton kernels) run their set-up and stop
before their first step. Also: a step that overruns its time box is stopped, its workers with it, and the steps
after it still run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def run_part(part: int, out: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_CHECK_SIZE": "toy", "GPU_CHECK_FSDP_PROGRAM": str(REPO / "tests" / "fsdp_on_cpu.py"),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "TMPDIR": str(tmp_path),
           "AMAPO_CACHE": str(tmp_path / "cache")}  # fmt: skip
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(part), str(out)], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def test_the_toy_plan_holds_every_entry_of_the_full_plan_and_each_is_one_the_benchmark_knows():
    import gpu_check
    from prefstep.common import known_framework
    from prefstep.plan import plan_frameworks

    full, toy = (set(plan_frameworks(gpu_check.SIZES[size]["plan"])) for size in ("full", "toy"))
    assert full == toy and all(known_framework(name) for name in full)
    assert {"amapo-amapo", "trl-dpo", "trl-cpo-simpo", "trl-cpo-simpo-liger", "liger-simpo"} <= full
    options = {option for name in full for option in name.split("+")[1:]}
    assert options == {"flex", "liger-head", "compiled-head", "liger-kernels", "compile"}  # issue 26's, each alone
    assert {f"amapo-amapo+{option}" for option in options} <= full
    assert "amapo-amapo+flex+liger-head+liger-kernels+compile" in full  # and all together
    first_group = gpu_check.SIZES["full"]["plan"].split(";")[0]
    assert first_group.startswith("1024:2048 x1: amapo-amapo trl-dpo")  # issue 26's question first
    assert gpu_check.SIZES["full"]["plan"].split(";")[1].strip().startswith("4096:8192 x1: amapo-amapo trl-dpo")


def test_part_1_ends_with_the_long_context_row_at_8k_to_32k_words_and_the_toy_plan_with_it_at_a_toy_length():
    """Issue 35: amapo's default against TRL DPO at long pairs, one length a group (min = max: no padding), after
    issue 26's questions, last (the time budget leaves out the end of a plan first)."""
    import gpu_check
    from prefstep.plan import parse_plan, plan_frameworks

    for size, lengths in (("full", [8192, 16384, 32768]), ("toy", [128])):
        plan = gpu_check.SIZES[size]["plan"]
        groups = parse_plan(plan, None, plan_frameworks(plan))
        tail = groups[-len(lengths) :]
        assert [(g.min_len, g.max_len, g.rounds) for g in tail] == [(n, n, 1) for n in lengths], size
        assert all(g.frameworks == ["amapo-amapo", "trl-dpo"] for g in tail), size
        assert all(g.max_len <= min(lengths) for g in groups[: -len(lengths)]), size


def test_part_1_runs_every_entry_of_the_matrix_or_its_set_up_at_toy_size(tmp_path):
    pytest.importorskip("trl")
    from preference_step import runnable_frameworks
    from prefstep.common import liger_status
    from prefstep.plan import plan_frameworks

    out = tmp_path / "out"
    result = run_part(1, out, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    files = ["gpu_check.json", "gpu_check.log", "gpu_check.md", "preference_step.json", "preference_step.md"]
    assert sorted(p.name for p in out.iterdir()) == files  # (a device machine returns at most 8 files)

    import gpu_check

    entries = plan_frameworks(gpu_check.SIZES["toy"]["plan"])
    _, cannot_run = runnable_frameworks(entries, liger_status()[0], cuda=False)
    assert {"amapo-amapo+flex", "amapo-amapo+liger-head", "trl-cpo-simpo-liger"} <= set(cannot_run)
    report = json.loads((out / "gpu_check.json").read_text())
    benchmark = report["steps"]["benchmark"]
    assert not benchmark["not_run"]
    short, long = benchmark["summary"]["vocab 311, 24-48 words"], benchmark["summary"]["vocab 311, 64-96 words"]
    assert set(short) | set(long) == set(entries)
    for name, summary in {**short, **long}.items():  # each ran, or (only where it cannot run here) its set-up did
        assert summary["rounds_ok"] == summary["rounds"] >= 1, name
        assert bool(summary.get("setup_only")) == (name in cannot_run), name
        assert summary.get("setup_only") or summary["tokens_per_s"] > 0, name
    assert sorted(benchmark["setup_only"]) == sorted(
        f"vocab 311, {'64-96' if name in long else '24-48'} words: {name}" for name in cannot_run
    )
    context = benchmark["summary"]["vocab 311, 128-128 words"]  # the long-context row (issue 35), at a toy length
    assert set(context) == {"amapo-amapo", "trl-dpo"} and all(s["rounds_ok"] == 1 for s in context.values())
    assert short["amapo-amapo"]["rounds_ok"] == 2 and len(short["amapo-amapo"]["tokens_per_s_per_round"]) == 2
    assert short["amapo-amapo"]["memory"]["rss"]["first_step"] > 0
    for option in ("compiled-head", "compile"):  # options that run here leave the loss as it is
        assert short[f"amapo-amapo+{option}"]["step1_loss"] == pytest.approx(short["amapo-amapo"]["step1_loss"],
                                                                               rel=1e-4)  # fmt: skip
    assert short["amapo-simpo"]["step1_loss"] == pytest.approx(short["trl-cpo-simpo"]["step1_loss"], rel=1e-5)
    head = short["trl-dpo"]["settings"]["fused_lm_head"]  # TRL DPO's default fused LM head, seen in use
    assert head["patched"] and head["calls_with_fused_lm_head"] == 2 and head["triton"] is False

    bench = json.loads((out / "preference_step.json").read_text())
    assert bench["cases"]["vocab 311, 24-48 words"]["warmup_worker"]["ok"]
    for case in bench["cases"].values():
        for name, runs in case["runs"].items():
            if name in cannot_run:  # its command line, config, model, data, Trainer and first batch
                assert runs[0]["setup"].startswith("set-up ok") and runs[0]["first_batch"]["tokens"] > 0, name
    tables = (out / "preference_step.md").read_text()
    assert "Memory headroom" in tables and "| amapo-amapo+flex | set-up ok (set-up only: cannot run here) |" in tables
    assert "| 128-128 words | longest pair length" in tables.split("Memory headroom")[1]  # the long-context row
    assert "trl-dpo: fused LM head (TRL add_fused_lm_head) ACTIVE" in tables
    assert "| amapo-amapo |" in (out / "gpu_check.md").read_text()


def test_part_2_runs_the_engines_the_layouts_the_default_train_the_profile_and_sampling_at_toy_size(tmp_path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "out"
    result = run_part(2, out, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["default_train.log", "gpu_check.json", "gpu_check.log",
                                                     "gpu_check.md", "gpu_profile.json", "gpu_profile.md",
                                                     "make_pairs.json"]  # fmt: skip

    report = json.loads((out / "gpu_check.json").read_text())
    engines = report["steps"]["engines"]["runs"]
    assert all(run["ok"] and len(run["losses"]) == 5 for run in engines.values())
    for name in ("zero3", "fsdp2"):
        assert engines[name]["max_loss_diff"] < 1e-5 and engines[name]["max_weight_diff"] < 1e-6, name
        assert engines[name]["same_tensors"]

    layouts = report["steps"]["layouts"]
    assert layouts["attention"] == "sdpa"  # no flash-attention on a CPU
    assert layouts["runs"]["packed"]["max_loss_diff"] < 1e-5 and layouts["runs"]["packed"]["max_weight_diff"] < 1e-6

    default = report["steps"]["default_train"]
    assert default["ok"] and default["train"]["train_loss"] > 0

    profile = json.loads((out / "gpu_profile.json").read_text())["frameworks"]
    assert set(profile) == {"amapo-amapo", "trl-cpo-simpo"}
    for name, result in profile.items():
        assert result["steps"] == 2 and sum(result["share"].values()) == pytest.approx(1.0, abs=0.02), name
        assert result["ms_per_step"]["LM head / log-probs"] > 0 and result["ms_per_step"]["layer matmuls"] > 0, name
        assert result["ms_per_step"]["optimizer"] > 0 and len(result["top"]) == 15, name

    rates = report["steps"]["sampling"]["tokens_per_s"]  # issue 28: the samplers side by side
    assert set(rates) == {"amapo", "amapo-per-row", "hf-batched", "hf-loop"} and min(rates.values()) > 0
    tables = (out / "gpu_check.md").read_text()
    assert "| zero3 | True |" in tables and "| fsdp2 | True |" in tables and "| packed | True |" in tables
    assert "The default `amapo train`" in tables and "### amapo-amapo: 2 profiled steps" in tables
    tests = report["steps"]["gpu_tests"]  # no CUDA here: pytest runs the files and their tests skip, with the reason
    assert tests["ok"] and "skipped" in tests["summary"] and "Tests that need CUDA" in tables


def test_a_step_past_its_time_box_is_stopped_with_its_children_and_the_next_step_still_runs(tmp_path, monkeypatch):
    import gpu_check

    marker = tmp_path / "child-outlived-the-box"
    child = tmp_path / "child.py"  # what a benchmark worker would be: it writes the marker if it lives 4 s
    child.write_text(f"import time\ntime.sleep(4)\nopen({str(marker)!r}, 'w').close()\n")
    parent = tmp_path / "parent.py"
    parent.write_text(f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(child)!r}])\n"
                      "time.sleep(60)\n")  # fmt: skip

    def slow_benchmark(self):
        self.report["steps"]["benchmark"] = self.run([sys.executable, str(parent)], "benchmark",
                                                     timeout=self.box("benchmark"))  # fmt: skip

    def quick_profile(self):
        self.report["steps"]["profile"] = self.run([sys.executable, "-c", "print('profiled')"], "profile",
                                                   timeout=self.box("profile"))  # fmt: skip

    monkeypatch.setitem(gpu_check.PARTS, 1, ("benchmark", "profile"))  # (the profile is part 2's: any next step)
    monkeypatch.setitem(gpu_check.SIZES["toy"], "boxes", {**gpu_check.SIZES["toy"]["boxes"], "benchmark": 2})
    monkeypatch.setattr(gpu_check.Check, "benchmark", slow_benchmark)
    monkeypatch.setattr(gpu_check.Check, "profile", quick_profile)
    start = time.perf_counter()
    status = gpu_check.main([str(tmp_path / "out"), "--part", "1", "--size", "toy", "--workdir", str(tmp_path)])
    assert status == 1 and time.perf_counter() - start < 20
    steps = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["steps"]
    assert steps["benchmark"]["stopped"] and not steps["benchmark"]["ok"] and steps["profile"]["ok"]
    assert "benchmark: stopped at its time box" in (tmp_path / "out" / "gpu_check.md").read_text()
    time.sleep(5)
    assert not marker.exists()  # the benchmark's own child was stopped with it


def test_a_part_with_no_time_left_reports_its_steps_as_not_run(tmp_path):
    import gpu_check

    status = gpu_check.main([str(tmp_path / "out"), "--part", "2", "--size", "toy", "--deadline", "5",
                             "--workdir", str(tmp_path)])  # fmt: skip
    steps = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["steps"]
    assert status == 1 and all(steps[name]["not_run"] for name in gpu_check.PARTS[2])
