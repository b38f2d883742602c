#!/usr/bin/env python
"""The GPU check of issue 13, steps 2 to 5 (``benchmarks/gpu_check.sh`` installs what is missing, then runs this).

    python benchmarks/gpu_check.py OUT [--size full|toy]

Everything it writes goes to OUT (at most 6 files, so that a device machine's 8-file return takes them all):
``gpu_check.json`` (every number), ``gpu_check.md`` (the tables), ``preference_step.json`` / ``.md`` (the
benchmark's own output) and ``gpu_check.log`` (each command and the tail of a failed one's output). Models, data and
run folders go to a work folder outside OUT (``--workdir``, default a temp folder).

1. **Throughput and memory** (``benchmarks/preference_step.py``, bf16 on a GPU): amapo-amapo, amapo-simpo,
   trl-cpo-simpo, trl-dpo and liger-simpo (when liger-kernel imports) on one random-init Llama-3-architecture model
   (``full``: hidden 2048, 8 layers, MLP 8192, 16 heads, 8 key/value heads, vocabulary 128,256; 8 pairs of 1-2k
   tokens a step).
2. **Sharded engines** (``amapo train``, 5 steps, fp32 so that differences are the engines' own): plainly, under
   DeepSpeed ZeRO-3 and under FSDP2 (``accelerate launch`` with the packaged ``zero3.yaml`` / ``fsdp.yaml``, one
   process per GPU, at most 2, no mixed precision). Per-step losses and final weights against the plain run.
3. **Layouts**: ``packed`` with an attention that reads sequence boundaries from position ids (flash-attention 2 if
   it imports, else sdpa, which builds the block mask from them) against ``padded``: per-step losses and tokens/s.

``toy`` runs the same steps at toy size (vocabulary 300, hidden 32), on a CPU too: the test suite does, so that a
GPU session spends its minutes running, not debugging. A step that fails is reported as failed and the rest go on;
the exit status is 1 if any step failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIZES = {
    "full": {
        "benchmark": ["--vocab", "128256", "--hidden_size", "2048", "--num_layers", "8", "--intermediate_size", "8192",
                      "--num_heads", "16", "--num_kv_heads", "8", "--batch", "8", "--min_len", "1024",
                      "--max_len", "2048", "--steps", "3", "--warmup", "1", "--rounds", "1", "--no_losscheck"],
        "frameworks": ["amapo-amapo", "amapo-simpo", "trl-cpo-simpo", "trl-dpo", "liger-simpo"],
        "engines_model": {"vocab": 128256, "hidden_size": 512, "num_hidden_layers": 4, "intermediate_size": 1536,
                          "num_attention_heads": 8, "num_key_value_heads": 4},
        "pairs": {"min_len": 128, "max_len": 512},
        "chunk": 0,  # amapo's default LM-head chunk
    },
    "toy": {
        "benchmark": ["--vocab", "300", "--min_len", "24", "--max_len", "48", "--batch", "4", "--steps", "1",
                      "--warmup", "0", "--rounds", "1", "--no_losscheck", "--threads", "1"],
        "frameworks": ["amapo-amapo", "trl-cpo-simpo"],
        "engines_model": {"vocab": 300, "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
                          "num_attention_heads": 4, "num_key_value_heads": 2},
        "pairs": {"min_len": 16, "max_len": 48},
        "chunk": 8,  # several head chunks per rank even at toy size
    },
}  # fmt: skip
STEPS, BATCH = 5, 8


def load_benchmark_module():
    spec = importlib.util.spec_from_file_location("preference_step", HERE / "preference_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Check:
    def __init__(self, out: Path, workdir: Path, size: str) -> None:
        self.out, self.workdir, self.size = out, workdir, SIZES[size]
        self.cuda = torch.cuda.is_available()
        self.gpus = torch.cuda.device_count()
        self.report: dict = {"size": size, "device": torch.cuda.get_device_name(0) if self.cuda else "cpu",
                             "gpus": self.gpus, "steps": {}}  # fmt: skip
        self.log_file = out / "gpu_check.log"

    def log(self, text: str) -> None:
        line = f"[gpu_check {time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        with self.log_file.open("a") as f:
            f.write(line + "\n")

    def run(self, command: list[str], name: str, timeout: float = 600) -> bool:
        self.log(f"{name}: {shlex.join(command)}")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        start = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
            ok, tail = result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        except subprocess.TimeoutExpired as e:
            ok, tail = False, f"timed out after {timeout:.0f} s\n{str(e.stdout or '')[-2000:]}"
        seconds = time.perf_counter() - start
        self.log(f"{name}: {'ok' if ok else 'FAILED'} in {seconds:.1f} s" + ("" if ok else f"\n{tail}"))
        return ok

    # --- 1. throughput and memory --------------------------------------------------------------------------

    def benchmark(self) -> None:
        out = self.out / "preference_step.json"
        command = [sys.executable, str(HERE / "preference_step.py"), *self.size["benchmark"], "--frameworks",
                   *self.size["frameworks"], "--out", str(out), "--workdir", str(self.workdir / "benchmark"),
                   "--device", "cuda" if self.cuda else "cpu"]  # fmt: skip
        ok = self.run(command, "benchmark", timeout=420)
        entry = {"ok": ok and out.exists()}
        if out.exists():
            report = json.loads(out.read_text())
            entry["summary"] = {v: data["summary"] for v, data in report["vocabs"].items() if "summary" in data}
            entry["liger"] = report.get("liger")
        self.report["steps"]["benchmark"] = entry

    # --- 2. sharded engines --------------------------------------------------------------------------------

    def engines_data(self) -> tuple[Path, Path]:
        """A random-init Llama (fp32) and STEPS * BATCH pairs, built with the benchmark's own builders."""
        bench = load_benchmark_module()
        shape = dict(self.size["engines_model"])
        vocab = shape.pop("vocab")
        model_dir = self.workdir / "engines-model"
        model_dir.mkdir(parents=True, exist_ok=True)
        bench.build_tokenizer(vocab, model_dir)
        bench.build_model(vocab, model_dir, seed=0, max_len=self.size["pairs"]["max_len"], cuda=False, shape=shape)
        rows = bench.make_pairs(STEPS * BATCH, vocab, seed=0, **self.size["pairs"])
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
        results = {}
        for name, command in runs.items():
            start = time.perf_counter()
            ok = self.run(command, f"train {name}")
            results[name] = {"ok": ok, "seconds": round(time.perf_counter() - start, 1)}
            if ok:
                results[name]["losses"] = step_losses(self.workdir / name)
        plain = self.workdir / "plain"
        for name in ("zero3", "fsdp2"):
            if results[name]["ok"] and results["plain"]["ok"]:
                results[name] |= compare_runs(plain, self.workdir / name)
        self.report["steps"]["engines"] = {"processes": processes, "runs": results}

    # --- 3. layouts ----------------------------------------------------------------------------------------

    def layouts(self, model_dir: Path, data: Path) -> None:
        attention = "flash_attention_2" if importlib.util.find_spec("flash_attn") and self.cuda else "sdpa"
        precision = ["--bf16", "true"] if self.cuda else []
        results = {}
        for layout in ("padded", "packed"):
            output = self.workdir / f"layout-{layout}"
            command = [sys.executable, "-m", "amapo.cli",
                       *self.train_command(model_dir, data, output, "--batch_layout", layout,
                                           "--attn_implementation", attention, *precision)]  # fmt: skip
            ok = self.run(command, f"layout {layout}")
            results[layout] = {"ok": ok}
            if ok:
                results[layout]["losses"] = step_losses(output)
                results[layout]["train_samples_per_second"] = train_result(output).get("train_samples_per_second")
        if all(r["ok"] for r in results.values()):
            results["packed"] |= compare_runs(self.workdir / "layout-padded", self.workdir / "layout-packed")
        self.report["steps"]["layouts"] = {"attention": attention, "runs": results}

    # --- the report ----------------------------------------------------------------------------------------

    def write(self) -> bool:
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2))
        (self.out / "gpu_check.md").write_text(markdown(self.report, self.out / "preference_step.md"))
        steps = self.report["steps"]
        failed = [n for n, s in steps.items() if not s.get("ok", all(r["ok"] for r in s.get("runs", {}).values()))]
        self.log(f"done: {', '.join(failed) + ' failed' if failed else 'every step ran'}; results in {self.out}")
        return not failed


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


def markdown(report: dict, benchmark_md: Path) -> str:
    lines = [f"# GPU check ({report['size']}): {report['device']}, {report['gpus']} GPU(s)", ""]
    if benchmark_md.exists():
        lines += ["## Throughput and memory (benchmarks/preference_step.py)", "", benchmark_md.read_text(), ""]
    engines = report["steps"].get("engines")
    if engines:
        title = f"## Sharded engines: amapo train, {STEPS} steps, fp32, {engines['processes']} process(es)"
        lines += comparison_table(title, "run", "seconds", "plain", engines["runs"], lambda run: run["seconds"])
    layouts = report["steps"].get("layouts")
    if layouts:
        title = f"## Layouts: packed vs padded, attention {layouts['attention']}"
        speed = lambda run: fmt(run.get("train_samples_per_second"))  # noqa: E731
        lines += comparison_table(title, "layout", "samples/s", "padded", layouts["runs"], speed)
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
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--workdir", type=Path, default=None, help="models and run folders (default: a temp folder)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["benchmark", "engines", "layouts"])
    a = parser.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="amapo-gpu-check-"))
    check = Check(a.out, workdir, a.size)
    check.log(f"size {a.size}, device {check.report['device']}, work folder {workdir}")
    if "benchmark" not in a.skip:
        check.benchmark()
    if {"engines", "layouts"} - set(a.skip):
        model_dir, data = check.engines_data()
        if "engines" not in a.skip:
            check.engines(model_dir, data)
        if "layouts" not in a.skip:
            check.layouts(model_dir, data)
    return 0 if check.write() else 1


if __name__ == "__main__":
    sys.exit(main())
