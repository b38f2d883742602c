#!/usr/bin/env python
"""The GPU check in two parts, each one command that ends within 6 minutes on one H100 or H200, install included
(``benchmarks/gpu_check.sh`` installs what is missing, then runs this):

    python benchmarks/gpu_check.py OUT --part 1|2 [--size full|toy] [--deadline SECONDS]

**Part 1: issue 26's question (issue 34).** ``benchmarks/preference_step.py`` in bf16 on Llama-3-8B layers (hidden
4096, MLP 14336, 32 query / 8 key-value heads, vocabulary 128,256; ``full``: 4 of its 32 layers), 8 pairs a step,
one unmeasured warm-up worker first (the first worker of a run ran slow on the H200), then this plan, in priority
order (``PEERS``, ``OPTIONS_ALONE``, ``LONG``, ... below):

1. 1-2k words per prompt + response, one round: amapo's default (amapo-amapo), TRL's ``DPOTrainer`` (its default
   fused LM head; the worker records that the head was patched in and used, and on which kernel), TRL's CPOTrainer
   SimPO, the same with ``use_liger_kernel``, the Liger loop, then amapo with each GPU option alone (+flex,
   +liger-head, +compiled-head, +liger-kernels);
2. 4-8k words, one round, for memory (out of memory is a result): amapo-amapo, trl-dpo, amapo with every option but
   compile, liger-simpo, trl-cpo-simpo, trl-cpo-simpo-liger;
3. 1-2k: amapo +compile alone, and every option together (compile included);
4. 1-2k, the second round: amapo-amapo, trl-dpo, trl-cpo-simpo, liger-simpo, and amapo-simpo (its step-1 loss
   against TRL's);
5. long context (issue 35), lowest priority: amapo-amapo and trl-dpo at 8k, 16k and 32k words per prompt + response
   (``LONG_CONTEXT``; min = max, so no padding: each sequence is the length + 2 tokens), one round each; out of
   memory is a result (the memory headroom table gives each one's longest pair trained). By a rough estimate
   (activations without checkpointing, ~180 KB per token and layer in bf16, plus weights, gradients and AdamW
   state), 8k needs ~90 GB (amapo, its prompt shared) to ~115 GB (TRL DPO): over an H100's memory, within an
   H200's; 16k and 32k run out of memory on either. The sweep with the lengths in between, on the benchmark's small
   model, is ``benchmarks/memory_vs_length.py --device cuda``.

The benchmark's table, per-round medians, first-step vs steady CUDA peaks, MFU and the memory headroom.

**Part 2: correctness on CUDA, the profile, sampling.**

1. Sharded engines (``amapo train``, 5 steps, fp32 so that differences are the engines' own): plainly, under
   DeepSpeed ZeRO-3 and under FSDP2 (``accelerate launch`` with the packaged ``zero3.yaml`` / ``fsdp.yaml``, one
   process per GPU, at most 2, no mixed precision). Per-step losses and final weights against the plain run.
2. Layouts: ``packed`` with an attention that reads sequence boundaries from position ids (flash-attention 2 if
   it imports, else sdpa) against ``padded``: per-step losses, final weights, samples/s.
3. The default ``amapo train`` (the built-in recipe) on CUDA: exit status, wall time, accuracies.
4. The tests that need CUDA and skip without it (``GPU_TESTS``): Liger's LM head against amapo's chunked head, its
   weight gradient summed in fp32 (issue 34), at the tolerance ``tests/test_liger_head.py`` derives.
5. ``benchmarks/gpu_profile.py``: two steps of amapo-amapo and of TRL CPO-SimPO under ``torch.profiler``, 1-2k words.
6. Sampling (``benchmarks/make_pairs.py`` at its small shape, bf16): make-pairs' vectorized sampler against plain
   batched ``generate(do_sample=True)`` and the per-row sampler it replaced (issue 28).

**Time.** Every step has a time box; a step that overruns is stopped (its whole process group) and reported as
such, and the steps after it still run. The part as a whole ends by ``--deadline`` seconds (``gpu_check.sh`` passes
what is left of its 345 s after installing); the benchmark gets the part's time less 20 s as its ``--time_budget``
and leaves out the workers at the end of its plan that would not finish (reported as not run): the plan's order is
its priority. Sizes come from the H200 run of 2026-12-04 (``benchmarks/results/h200-2026-12-04-*``): at hidden 2048
x 8 layers (1.0B parameters), 1-2k words, 4 steps, a worker took 19-31 s (most of it start-up: imports, loading,
the first step), the first worker of a run 39 s, the benchmark's own start (the peak-matmul probe, building the
model) 31 s; the engines 21-34 s per run, the layouts 23-28 s, the default run 40 s. Four 8B layers are 1.9B
parameters (1.05B of them the embedding and the head); taken with margin: the start 45 s, a worker 25 s at 1-2k
(30 s for +flex and +compiled-head, which compile a kernel), 35 s at 4-8k (4x the tokens per step), a +compile
worker 25 + 60 s of compiling (not yet measured on a GPU). Part 1, 345 s less ~10 s of install (3.4 s from the
carried wheels in the CPU rehearsal) and the import probe: the benchmark's budget is ~315 s; start 45 + warm-up
worker 39 + group 1 (9 workers: 7 x 25 + 2 x 30 = 235 s) = 319 s. So group 1 is what part 1 measures (its last
entries are the first a slow start cuts); group 2 (6 x 35 = 210 s), group 3 (2 x 85 s) and group 4 (5 x 25 s) run
as far as these estimates were high, in that order (amapo-amapo and trl-dpo at 4-8k first), then group 5 (6
workers, ~35 s each: the start, then an out-of-memory error or three steps of a few seconds). Part 2, ~335 s after
the install: engines (3 x 34 s, the model and data built first) ~110 s + layouts 2 x 28 s + the default run 40 s
+ the CUDA tests ~30 s (pytest's start, Triton compiling Liger's kernels) + the profile (start 45 s, 2 workers
x 25 s) ~95 s = ~330 s: sampling, last, gets what is left (it is the first step a slow start cuts).

**Nothing that has never run.** ``toy`` runs the same steps at toy size (vocabulary 311, hidden 32), on a CPU too:
the test suite does (``tests/test_gpu_check.py``). Its plan holds every entry of the full plan (a test checks the
two sets are equal), each once (amapo-amapo twice, for the rounds). An entry this machine cannot run (flex's
backward, Liger's Triton kernels, no liger-kernel: ``GPU_ONLY_OPTIONS`` / ``GPU_ONLY_FRAMEWORKS`` /
``LIGER_FRAMEWORKS`` in ``prefstep/common.py``) runs with ``--rehearse`` off a GPU: its command line, its config,
model, data, Trainer and first batch, with stand-ins for liger-kernel where it is not installed, then it stops
before its first step and is reported "set-up ok" (``prefstep/setup_only.py``).

**Files.** Each part writes at most 8 files to OUT: ``gpu_check.json`` (every number), ``gpu_check.md`` (the
tables), ``gpu_check.log`` (each command, and the tail of a failed or stopped one's output); part 1 adds
``preference_step.json`` / ``.md``; part 2 adds ``gpu_profile.json`` / ``.md``, ``default_train.log`` and
``make_pairs.json``. Models, data and run folders go to ``--workdir`` (default a temp folder). The exit status is 1
if any step failed or was stopped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from prefstep.data import build_model, build_tokenizer, make_pairs  # the benchmark's builders
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LLAMA3_8B_LAYERS = ["--hidden_size", "4096", "--intermediate_size", "14336", "--num_heads", "32", "--num_kv_heads", "8"]
# Part 1's entries (the docstring says why this order): issue 26's options and TRL's and Liger's peers at 1-2k words
PEERS = "trl-dpo trl-cpo-simpo trl-cpo-simpo-liger liger-simpo"
OPTIONS_ALONE = "amapo-amapo+flex amapo-amapo+liger-head amapo-amapo+compiled-head amapo-amapo+liger-kernels"
FAST = "amapo-amapo+flex+liger-head+liger-kernels"  # every option but compile (its minutes of start-up)
COMPILED = "amapo-amapo+compile amapo-amapo+flex+liger-head+liger-kernels+compile"  # compile alone; all together
LONG = f"amapo-amapo trl-dpo {FAST} liger-simpo trl-cpo-simpo trl-cpo-simpo-liger"  # 4-8k: memory, one round
SECOND_ROUND = "amapo-amapo trl-dpo trl-cpo-simpo liger-simpo amapo-simpo"  # amapo-simpo: step-1 loss vs TRL's
LONG_CONTEXT = "amapo-amapo trl-dpo"  # issue 35: memory at long pairs, one length a group, last


def part_1_plan(short: str, long: str, long_context: tuple[int, ...], toy: bool = False) -> str:
    """Part 1's plan at the lengths ``short`` and ``long`` ("MIN:MAX"), then the long-context groups, one per length
    of ``long_context`` (words; min = max). ``toy`` keeps every entry but runs each once where the full plan repeats
    it (the 4-8k group: only the one entry it adds; the second round: amapo-amapo and the one entry it adds), so that
    CI runs every entry without running the whole matrix twice; the long-context groups are the same at its
    lengths."""
    tail = "".join(f"; {n}:{n} x1: {LONG_CONTEXT}" for n in long_context)
    if toy:
        return (f"{short} x1: amapo-amapo {PEERS} {OPTIONS_ALONE}; {long} x1: {FAST}; {short} x1: {COMPILED}; "
                f"{short} x1: amapo-amapo amapo-simpo{tail}")  # fmt: skip
    return (f"{short} x1: amapo-amapo {PEERS} {OPTIONS_ALONE}; {long} x1: {LONG}; {short} x1: {COMPILED}; "
            f"{short} x1: {SECOND_ROUND}{tail}")  # fmt: skip


SIZES = {
    "full": {
        "model": ["--vocab", "128256", *LLAMA3_8B_LAYERS, "--num_layers", "4", "--batch", "8"],
        "benchmark": ["--steps", "2", "--warmup", "1", "--no_losscheck"],
        "plan": part_1_plan("1024:2048", "4096:8192", (8192, 16384, 32768)),
        "profile": ["--min_len", "1024", "--max_len", "2048"],
        "engines_model": {"vocab": 128256, "hidden_size": 512, "num_hidden_layers": 4, "intermediate_size": 1536,
                          "num_attention_heads": 8, "num_key_value_heads": 4},
        "pairs": {"min_len": 128, "max_len": 512},
        "chunk": 0,  # amapo's default LM-head chunk
        "default_train": [],
        # seconds: the whole part, and each step's box (a step gets at most what is left)
        "deadline": 345,
        "boxes": {"benchmark": 345, "engines": 130, "layouts": 75, "default_train": 75, "profile": 110,
                  "sampling": 50, "gpu_tests": 45},
        "sampling": ["--num_prompts", "64", "--max_new_tokens", "64", "--rounds", "3"],
    },
    "toy": {
        "model": ["--vocab", "311", "--batch", "4", "--threads", "1", "--hidden_size", "32", "--num_layers", "2",
                  "--intermediate_size", "64", "--num_heads", "4", "--num_kv_heads", "2"],
        "benchmark": ["--steps", "1", "--warmup", "1", "--no_losscheck"],
        "plan": part_1_plan("24:48", "64:96", (128,), toy=True),
        "profile": ["--min_len", "24", "--max_len", "48"],
        "engines_model": {"vocab": 311, "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
                          "num_attention_heads": 4, "num_key_value_heads": 2},
        "pairs": {"min_len": 16, "max_len": 48},
        "chunk": 8,  # several head chunks per rank even at toy size
        "default_train": ["--max_steps", "3", "--eval_datasets", "none"],
        "deadline": 900,
        "boxes": {"benchmark": 600, "engines": 300, "layouts": 150, "default_train": 150, "profile": 120,
                  "sampling": 120, "gpu_tests": 120},
        "sampling": ["--vocab", "311", "--num_prompts", "4", "--num_samples", "2", "--max_new_tokens", "8",
                     "--prompt_words", "6", "--batch_size", "8", "--rounds", "1"],
    },
}  # fmt: skip
PARTS = {1: ("benchmark",), 2: ("engines", "layouts", "default_train", "gpu_tests", "profile", "sampling")}
GPU_TESTS = ["tests/test_liger_head.py"]  # pytest files whose tests skip without CUDA (or Triton's CPU interpreter)
STEPS, BATCH = 5, 8
MIN_BOX = 15  # seconds: a step with less time left than this is not started


class Check:
    def __init__(self, out: Path, workdir: Path, size: str, part: int, deadline: float) -> None:
        self.out, self.workdir, self.size, self.part = out, workdir, SIZES[size], part
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.gpus = torch.cuda.device_count()
        self.end = time.perf_counter() + deadline
        self.report: dict = {"size": size, "part": part, "device": torch.cuda.get_device_name(0) if self.cuda
                             else "cpu", "gpus": self.gpus, "deadline_s": deadline, "steps": {}}  # fmt: skip
        self.log_file = out / "gpu_check.log"

    def log(self, text: str) -> None:
        line = f"[gpu_check {time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        with self.log_file.open("a") as f:
            f.write(line + "\n")

    def left(self) -> float:
        return self.end - time.perf_counter()

    def box(self, step: str) -> float:
        """This step's time box: its own, or what is left of the part's deadline if less."""
        return min(self.size["boxes"][step], self.left())

    def run(self, command: list[str], name: str, timeout: float, log_to: Path | None = None) -> dict:
        """Run ``command`` in its own process group; past ``timeout`` the whole group (a benchmark's workers too) is
        stopped. Returns ok, seconds and whether it was stopped; the output goes to ``log_to`` when given."""
        self.log(f"{name} (time box {timeout:.0f} s): {shlex.join(command)}")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=REPO, start_new_session=True)  # fmt: skip
        try:
            output, _ = proc.communicate(timeout=max(timeout, 1))
            stopped = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            stopped = True
        seconds = time.perf_counter() - start
        ok = proc.returncode == 0 and not stopped
        if log_to is not None:
            log_to.write_text(output)
        status = "ok" if ok else (f"STOPPED at its time box ({timeout:.0f} s)" if stopped else "FAILED")
        self.log(f"{name}: {status} in {seconds:.1f} s" + ("" if ok else f"\n{output[-4000:]}"))
        return {"ok": ok, "stopped": stopped, "seconds": round(seconds, 1)}

    def run_writing(self, command: list[str], name: str, timeout: float, out: Path) -> tuple[dict, dict | None]:
        """``run`` for a command that writes its results to ``out`` (JSON): ok only if it did; the entry and the
        results (None if there are none)."""
        entry = self.run(command, name, timeout=timeout)
        entry["ok"] = entry["ok"] and out.exists()
        return entry, json.loads(out.read_text()) if out.exists() else None

    def not_run(self, step: str) -> None:
        self.log(f"{step}: not run: {self.left():.0f} s left of the part's deadline")
        self.report["steps"][step] = {"ok": False, "not_run": True}

    # --- part 1: throughput and memory; part 2: the profile, sampling, the CUDA tests ---------------------------------

    def benchmark(self) -> None:
        """``preference_step.py`` on the size's plan, within the part's time. Off a GPU, ``--rehearse``: an entry
        that needs one (or liger-kernel) runs its set-up and stops before its first step (prefstep/setup_only.py)."""
        out = self.out / "preference_step.json"
        box = self.box("benchmark")
        command = [sys.executable, str(HERE / "preference_step.py"), *self.size["model"], *self.size["benchmark"],
                   "--plan", self.size["plan"], "--time_budget", str(int(max(box - 20, 1))), "--out", str(out),
                   "--workdir", str(self.workdir / "benchmark"), "--device", self.device]  # fmt: skip
        if not self.cuda:
            command.append("--rehearse")
        entry, report = self.run_writing(command, "benchmark", box, out)
        if report is not None:
            entry["summary"] = {key: case["summary"] for key, case in report["cases"].items() if "summary" in case}
            runs = [(key, name, run) for key, case in report["cases"].items() for name, runs in case["runs"].items()
                    for run in runs]  # fmt: skip
            entry["not_run"] = sorted({f"{key}: {name}" for key, name, run in runs if run.get("skipped")})
            entry["setup_only"] = sorted({f"{key}: {name}" for key, name, run in runs if run.get("setup_only")})
            entry["liger"] = report.get("liger")
        self.report["steps"]["benchmark"] = entry

    def sampling(self) -> None:
        """Issue 28: ``amapo make-pairs``'s sampler against plain batched ``generate(do_sample=True)`` and the
        per-row sampler it replaced, at the small benchmark shape (``benchmarks/make_pairs.py``)."""
        out = self.out / "make_pairs.json"
        command = [sys.executable, str(HERE / "make_pairs.py"), *self.size["sampling"], "--sampling_only",
                   "--device", self.device, "--out", str(out)]  # fmt: skip
        entry, results = self.run_writing(command, "sampling", self.box("sampling"), out)
        if results is not None:
            entry["tokens_per_s"] = results["sampling_tokens_per_s"]
        self.report["steps"]["sampling"] = entry

    def gpu_tests(self) -> None:
        """``GPU_TESTS`` under pytest: on a GPU they run; here (no CUDA) they skip, and the step checks that pytest
        and the files run on this image at all. The pytest summary line goes into the report."""
        log = self.workdir / "gpu_tests.log"
        command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *GPU_TESTS]
        entry = self.run(command, "gpu_tests", timeout=self.box("gpu_tests"), log_to=log)
        lines = log.read_text().strip().splitlines() if log.exists() else []
        entry["summary"] = lines[-1] if lines else None
        self.report["steps"]["gpu_tests"] = entry

    def profile(self) -> None:
        command = [sys.executable, str(HERE / "gpu_profile.py"), str(self.out), *self.size["model"],
                   *self.size["profile"], "--workdir", str(self.workdir / "benchmark"),
                   "--device", self.device]  # fmt: skip
        entry, results = self.run_writing(command, "profile", self.box("profile"), self.out / "gpu_profile.json")
        if results is not None:
            entry["frameworks"] = {name: {k: v for k, v in r.items() if k in ("wall_ms_per_step", "share", "error")}
                                   for name, r in results["frameworks"].items()}  # fmt: skip
        self.report["steps"]["profile"] = entry

    # --- part 2: sharded engines --------------------------------------------------------------------------------------

    def engines_data(self) -> tuple[Path, Path]:
        """A random-init Llama (fp32) and STEPS * BATCH pairs, built with the benchmark's own builders."""
        shape = dict(self.size["engines_model"])
        vocab = shape.pop("vocab")
        model_dir = self.workdir / "engines-model"
        model_dir.mkdir(parents=True, exist_ok=True)
        build_tokenizer(vocab, model_dir)
        build_model(vocab, model_dir, seed=0, max_len=self.size["pairs"]["max_len"], cuda=False, shape=shape)
        rows = make_pairs(STEPS * BATCH, vocab, seed=0, **self.size["pairs"])
        data = self.workdir / "engines-pairs.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return model_dir, data

    def train_command(self, model_dir: Path, data: Path, output: Path, *extra: str, processes: int = 1) -> list[str]:
        return [
            "train", "--model_name_or_path", str(model_dir), "--dataset", str(data), "--method", "amapo",
            "--max_steps", str(STEPS), "--per_device_train_batch_size", str(BATCH // processes),
            "--margin_stats", "all_ranks", "--optim", "sgd", "--learning_rate", "1e-3", "--max_grad_norm", "0",
            "--warmup_ratio", "0", "--logging_steps", "1", "--eval_datasets", "none", "--save_strategy", "no",
            "--train_sampling_strategy", "sequential", "--max_length", str(self.size["pairs"]["max_len"] + 8),
            "--max_prompt_length", str(self.size["pairs"]["max_len"]), "--lm_head_chunk_size", str(self.size["chunk"]),
            "--report_to", "none", "--seed", "0",
            "--output_dir", str(output), *extra,
        ]  # fmt: skip

    def accelerate_config(self, name: str, processes: int) -> Path:
        config = yaml.safe_load((REPO / "src/amapo/recipes/accelerate" / f"{name}.yaml").read_text())
        config.update(num_processes=processes, mixed_precision="no")
        if not self.cuda and "fsdp_config" in config:
            config["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] = False  # needs a device to broadcast from
        path = self.workdir / f"{name}-{processes}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def engines(self, model_dir: Path, data: Path) -> None:
        processes = max(1, min(2, self.gpus))
        runs = {"plain": [sys.executable, "-m", "amapo.cli",
                          *self.train_command(model_dir, data, self.workdir / "plain")]}  # fmt: skip
        fsdp_program = os.environ.get("GPU_CHECK_FSDP_PROGRAM")  # tests: accelerate's FSDP on CPU processes
        for engine, config in (("zero3", "zero3"), ("fsdp2", "fsdp")):
            program = [fsdp_program] if engine == "fsdp2" and fsdp_program else ["-m", "amapo.cli"]
            runs[engine] = [
                sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(self.accelerate_config(config, processes)), "--main_process_port", str(29500 + len(runs)),
                *program, *self.train_command(model_dir, data, self.workdir / engine, processes=processes),
            ]  # fmt: skip
        results = self.run_within("engines", runs, lambda name: self.workdir / name)
        plain = self.workdir / "plain"
        for name in ("zero3", "fsdp2"):
            if results[name]["ok"] and results["plain"]["ok"]:
                results[name] |= compare_runs(plain, self.workdir / name)
        self.report["steps"]["engines"] = {"processes": processes, "runs": results}

    def run_within(self, step: str, commands: dict[str, list[str]], output_of) -> dict[str, dict]:
        """Run ``commands`` one after the other inside ``step``'s time box; each gets what is left of it; the step
        losses of each run that ended well (``output_of(name)``: its output folder)."""
        end = time.perf_counter() + self.box(step)
        results = {}
        for name, command in commands.items():
            left = end - time.perf_counter()
            if left < MIN_BOX:
                self.log(f"{step} {name}: not run: {max(left, 0):.0f} s left of the step's time box")
                results[name] = {"ok": False, "not_run": True}
                continue
            results[name] = self.run(command, f"{step} {name}", timeout=left)
            if results[name]["ok"]:
                results[name]["losses"] = step_losses(output_of(name))
        return results

    # --- part 2: layouts ----------------------------------------------------------------------------------------------

    def layouts(self, model_dir: Path, data: Path) -> None:
        attention = "flash_attention_2" if importlib.util.find_spec("flash_attn") and self.cuda else "sdpa"
        precision = ["--bf16", "true"] if self.cuda else []

        def folder(layout: str) -> Path:
            return self.workdir / f"layout-{layout}"

        commands = {layout: [sys.executable, "-m", "amapo.cli",
                             *self.train_command(model_dir, data, folder(layout), "--batch_layout", layout,
                                                 "--attn_implementation", attention, *precision)]
                    for layout in ("padded", "packed")}  # fmt: skip
        results = self.run_within("layouts", commands, folder)
        for layout, run in results.items():
            if run["ok"]:
                run["train_samples_per_second"] = train_result(folder(layout)).get("train_samples_per_second")
        if all(r["ok"] for r in results.values()):
            results["packed"] |= compare_runs(folder("padded"), folder("packed"))
        self.report["steps"]["layouts"] = {"attention": attention, "runs": results}

    # --- part 2: the default amapo train ------------------------------------------------------------------------------

    def default_train(self) -> None:
        """``amapo train`` with no options but a fresh cache and output folder (the README's first command)."""
        output = self.workdir / "default-train"
        os.environ["AMAPO_CACHE"] = str(self.workdir / "amapo-cache")  # built here, never the user's
        command = [sys.executable, "-m", "amapo.cli", "train", "--output_dir", str(output),
                   *self.size["default_train"]]  # fmt: skip
        entry = self.run(command, "default_train", timeout=self.box("default_train"),
                         log_to=self.out / "default_train.log")  # fmt: skip
        results = output / "results.json"
        if entry["ok"] and results.exists():
            summary = json.loads(results.read_text())
            entry["train"] = {k: v for k, v in summary["train"].items() if k in ("train_loss", "train_runtime")}
            entry["accuracy_after"] = {k.removeprefix("eval_").removesuffix("_rewards/accuracies"): v
                                       for k, v in summary.get("eval_after", {}).items()
                                       if k.endswith("_rewards/accuracies")}  # fmt: skip
        self.report["steps"]["default_train"] = entry

    # --- the report ----------------------------------------------------------------------------------------

    def write(self) -> bool:
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2))
        (self.out / "gpu_check.md").write_text(markdown(self.report, self.out))
        failed = [name for name, step in self.report["steps"].items() if not step_ok(step)]
        self.log(f"done: {', '.join(failed) + ' failed or not run' if failed else 'every step ran'}; "
                 f"results in {self.out}")  # fmt: skip
        return not failed


def step_ok(step: dict) -> bool:
    return step.get("ok", bool(step.get("runs")) and all(r["ok"] for r in step.get("runs", {}).values()))


def why_not_ok(step: dict) -> str:
    if step.get("not_run"):
        return "not run (out of time)"
    return "stopped at its time box" if step.get("stopped") else "FAILED"


def step_losses(output: Path) -> list[float]:
    logs = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return [log["loss"] for log in logs if "loss" in log]


def train_result(output: Path) -> dict:
    path = output / "results.json"
    return json.loads(path.read_text()).get("train", {}) if path.exists() else {}


def compare_runs(reference: Path, other: Path) -> dict:
    """Largest per-step loss difference and largest final-weight difference of ``other`` against ``reference``."""
    a, b = step_losses(reference), step_losses(other)
    wa, wb = load_file(reference / "model.safetensors"), load_file(other / "model.safetensors")
    return {
        "max_loss_diff": max((abs(x - y) for x, y in zip(a, b, strict=True)), default=None),
        "max_weight_diff": max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa),
        "same_tensors": set(wa) <= set(wb),
    }


def markdown(report: dict, out: Path) -> str:
    lines = [f"# GPU check part {report['part']} ({report['size']}): {report['device']}, {report['gpus']} GPU(s)", ""]
    for name, step in report["steps"].items():
        if not step_ok(step):
            lines += [f"**{name}: {why_not_ok(step)}** (see gpu_check.log)", ""]
    for title, file in (("Throughput and memory (benchmarks/preference_step.py)", "preference_step.md"),
                        ("Where the time goes (benchmarks/gpu_profile.py)", "gpu_profile.md")):  # fmt: skip
        if (out / file).exists():
            lines += [f"## {title}", "", (out / file).read_text(), ""]
    engines = report["steps"].get("engines")
    if engines and engines.get("runs"):
        title = f"## Sharded engines: amapo train, {STEPS} steps, fp32, {engines['processes']} process(es)"
        lines += comparison_table(title, "run", "seconds", "plain", engines["runs"], lambda run: run.get("seconds"))
    layouts = report["steps"].get("layouts")
    if layouts and layouts.get("runs"):
        title = f"## Layouts: packed vs padded, attention {layouts['attention']}"
        speed = lambda run: fmt(run.get("train_samples_per_second"))  # noqa: E731
        lines += comparison_table(title, "layout", "samples/s", "padded", layouts["runs"], speed)
    sampling = report["steps"].get("sampling")
    if sampling and sampling.get("tokens_per_s"):
        rates = sampling["tokens_per_s"]
        lines += ["## Sampling (benchmarks/make_pairs.py): generated tokens/s", "",
                  "| method | tokens/s | vs hf-batched |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {name} | {rate:.0f} | {rate / rates['hf-batched']:.2f}x |" for name, rate in rates.items()]
        lines.append("")
    tests = report["steps"].get("gpu_tests")
    if tests and not tests.get("not_run"):
        lines += ["## Tests that need CUDA (pytest " + " ".join(GPU_TESTS) + ")", "", f"{tests.get('summary')}", ""]
    default = report["steps"].get("default_train")
    if default and not default.get("not_run"):
        accuracy = ", ".join(f"{k} {v:.3f}" for k, v in default.get("accuracy_after", {}).items()) or "-"
        lines += ["## The default `amapo train` (built-in recipe)", "",
                  f"ok {default['ok']}, {default['seconds']} s wall, train {default.get('train', {})}; ranking "
                  f"accuracy after training: {accuracy}", ""]  # fmt: skip
    return "\n".join(lines) + "\n"


def comparison_table(title: str, kind: str, measure: str, reference: str, runs: dict, value) -> list[str]:
    """One row per run: ok, ``value(run)`` under ``measure``, step losses, and differences from ``reference``."""
    lines = [title, "", f"| {kind} | ok | {measure} | step losses | max loss diff vs {reference} | "
             f"max weight diff vs {reference} |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, run in runs.items():
        losses = " ".join(f"{x:.6f}" for x in run.get("losses", []))
        lines.append(f"| {name} | {run['ok']} | {value(run)} | {losses} | {fmt(run.get('max_loss_diff'))} | "
                     f"{fmt(run.get('max_weight_diff'))} |")  # fmt: skip
    return [*lines, ""]


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where the results go")
    parser.add_argument("--part", type=int, choices=sorted(PARTS), required=True)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--deadline", type=float, default=None, help="seconds the part may take (default: the size's)")
    parser.add_argument("--workdir", type=Path, default=None, help="models and run folders (default: a temp folder)")
    a = parser.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="amapo-gpu-check-"))
    deadline = a.deadline if a.deadline is not None else SIZES[a.size]["deadline"]
    check = Check(a.out, workdir, a.size, a.part, deadline)
    check.log(f"part {a.part}, size {a.size}, device {check.report['device']}, {deadline:.0f} s, work folder {workdir}")
    engines_data = None
    for step in PARTS[a.part]:
        if check.left() < MIN_BOX:
            check.not_run(step)
        elif step in ("engines", "layouts"):
            engines_data = engines_data or check.engines_data()
            getattr(check, step)(*engines_data)
        else:
            getattr(check, step)()
    return 0 if check.write() else 1


if __name__ == "__main__":
    sys.exit(main())
