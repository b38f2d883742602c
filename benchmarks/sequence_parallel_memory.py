#!/usr/bin/env python
"""Per-process peak memory of ``--sequence_parallel_size`` (DeepSpeed's Ulysses) at long pairs, in CPU processes.

Issue 35's goal: with SP 2, each process's peak at long pairs is at most 0.6x of SP 1's. The script builds, once, in
a work folder, ``preference_step.py``'s model (Llama, hidden 256, 4 layers, MLP 688, 4 heads, untied, vocabulary
32000; ``--hidden_size`` ... change it) and word-level tokenizer, and ``--steps`` pairs whose chosen and rejected
sequences are both exactly ``--length`` tokens (BOS + prompt + response + EOS; equal lengths: no padding, so no
attention mask in either run). Then, for each size N in ``--sizes``, ``amapo train`` runs in N processes
(``accelerate launch`` with the packaged ``zero3.yaml``, no mixed precision, fp32, sdpa, padded layout, batch 1,
AdamW, ``--steps`` steps), all N processes one SP group holding each pair together. Each process records:

* ``peak``: its RSS high-water mark (VmHWM) over the whole run, loading and imports included;
* ``training peak``: its high-water mark from the first training step on (reset there: ``/proc/self/clear_refs``);
* ``step memory``: the training peak minus the RSS right before the first step: what the steps themselves add
  (activations, gradients, optimizer state, all-to-all buffers), the part SP divides;
* step time: wall time of each optimizer step (the first includes amapo's one-time checks).

The table gives, per size, the largest of its processes' values, and the ratio of each to SP 1. Each process has
``cores / N`` threads. What a process holds that SP does not divide: the Python, torch and DeepSpeed libraries
(~0.5-0.7 GiB of RSS on CPU, no device memory on a GPU) and, under ZeRO-3, nothing else that grows with length.

``--check_dp`` instead runs the invariant that is too slow for CI on 2 cores: 4 processes (SP 2 x DP 2) and 2 (DP 2)
train the built-in task (AMaPO, statistics over the optimizer step, 2 accumulation steps, 3 SGD steps without
clipping) to the same per-step losses, statistics and final weights.

    python benchmarks/sequence_parallel_memory.py --length 8192 --out benchmarks/results/sequence_parallel_memory
    python benchmarks/sequence_parallel_memory.py --check_dp
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from prefstep.common import GB, MODEL_SHAPE  # noqa: E402
from prefstep.measure import current_rss_bytes, peak_rss_bytes, reset_peak_rss  # noqa: E402

RANK_FILE = "memory-rank{}.json"
# The built-in task of tests/test_sharded_training.py, for --check_dp
CHECK_ARGS = [
    "train", "--config", "builtin", "--max_steps", "3", "--eval_datasets", "none", "--logging_steps", "1",
    "--optim", "sgd", "--max_grad_norm", "0", "--learning_rate", "1e-2", "--warmup_ratio", "0",
    "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--margin_stats", "optimizer_step",
    "--lm_head_chunk_size", "4", "--attn_implementation", "sdpa", "--batch_layout", "padded",
]  # fmt: skip
# Both runs' steps hold the same 16 pairs, in other micro-batches: each rank of an SP group loads its own batch and
# the group trains them in turn (DeepSpeed's adapter), so SP 2 x DP 2's step k holds batches {4k, 4k+1} on group 0
# and {4k+2, 4k+3} on group 1, DP 2's {4k, 4k+2} and {4k+1, 4k+3} (2 accumulation steps). Statistics over the whole
# optimizer step then pool the same pairs, and the step's gradient is the same sum.
CHECKED = ("loss", "grad_norm", "batch/mu", "margin/mean", "logps/chosen", "logps/rejected", "rewards/accuracies")


# --- in each launched process ------------------------------------------------------------------------------------


def memory_callback(folder: Path):
    from transformers import TrainerCallback

    class MemoryCallback(TrainerCallback):
        """This process's RSS: its whole-run peak, its peak from the first step on, and each step's wall time."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.record = {"rank": args.process_index, "threads": _threads(), "peak_before_training": peak_rss_bytes()}
            self.record["rss_at_first_step"] = current_rss_bytes()
            self.record["peak_reset"] = reset_peak_rss()
            self.step_seconds, self.step_peaks, self.step_start_rss, self.started = [], [], [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self.training_peak = max(getattr(self, "training_peak", 0), peak_rss_bytes())
            self.step_start_rss.append(current_rss_bytes())
            reset_peak_rss()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_seconds.append(time.perf_counter() - self.started)
            self.step_peaks.append(peak_rss_bytes())

        def on_train_end(self, args, state, control, **kwargs):
            training_peak = max(getattr(self, "training_peak", 0), peak_rss_bytes())
            self.record.update(
                training_peak=training_peak if self.record["peak_reset"] else None,
                peak=max(training_peak, self.record["peak_before_training"]),
                step_seconds=self.step_seconds,
                step_peaks=self.step_peaks,  # each step's high-water mark (reset at its start)
                step_start_rss=self.step_start_rss,
            )
            (folder / RANK_FILE.format(args.process_index)).write_text(json.dumps(self.record) + "\n")

    return MemoryCallback()


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def worker(folder: Path, train_args: list[str]) -> None:
    """``amapo train TRAIN_ARGS`` with the memory callback (a launched process), then the process group closed as
    the CLI closes it."""
    from amapo.cli import close_process_group
    from amapo.train.parsing import parse_train_args
    from amapo.train.preflight import check_before_loading
    from amapo.train.run import run_training

    config = parse_train_args(train_args, check_before_loading)
    run_training(config, callbacks=[memory_callback(folder)])
    close_process_group(wait=True)


# --- the parent ---------------------------------------------------------------------------------------------------


def launch(folder: Path, processes: int, program: list[str], log_name: str) -> None:
    """``accelerate launch`` of ``program`` in ``processes`` CPU processes under the packaged zero3.yaml."""
    import yaml

    from amapo.recipes import ACCELERATE_DIR

    config = yaml.safe_load((ACCELERATE_DIR / "zero3.yaml").read_text())
    config.update(num_processes=processes, mixed_precision="no")
    config_path = folder / f"zero3-{processes}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path),
               "--main_process_port", str(free_port()), *program]  # fmt: skip
    with open(folder / log_name, "w") as log:
        result = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = (folder / log_name).read_text().splitlines()[-30:]
        raise SystemExit(f"{log_name}: exit {result.returncode}; last lines:\n" + "\n".join(tail))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_work_folder(a, work: Path) -> tuple[Path, Path]:
    """The model and tokenizer (``preference_step.py``'s), and ``--steps`` pairs of sequences ``--length`` long."""
    from prefstep.data import build_model, build_tokenizer, make_pairs

    model_dir, data = work / "model", work / "pairs.jsonl"
    if not (model_dir / "config.json").is_file():
        model_dir.mkdir(parents=True, exist_ok=True)
        build_tokenizer(a.vocab, model_dir)
        shape = MODEL_SHAPE | {k: v for k, v in {"hidden_size": a.hidden_size, "num_hidden_layers": a.num_layers,
                                                  "num_attention_heads": a.num_heads}.items() if v}  # fmt: skip
        shape["num_key_value_heads"] = shape["num_attention_heads"]
        build_model(a.vocab, model_dir, seed=0, max_len=a.length, cuda=False, shape=shape)
    words = a.length - 2  # BOS + words + EOS; prompt and response words split evenly, chosen and rejected alike
    rows = make_pairs(a.steps, a.vocab, min_len=words, max_len=words, seed=0)
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return model_dir, data


def measure(a, work: Path, size: int, model_dir: Path, data: Path) -> dict:
    folder = work / f"sp{size}"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(RANK_FILE.format("*")):
        old.unlink()
    train = [
        "--model_name_or_path", str(model_dir), "--dataset", str(data), "--method", a.method,
        "--max_steps", str(a.steps), "--per_device_train_batch_size", "1", "--max_length", str(a.length + 8),
        "--max_prompt_length", str(a.length), "--attn_implementation", "sdpa", "--batch_layout", "padded",
        "--torch_dtype", "float32", "--eval_datasets", "none", "--logging_steps", "1", "--learning_rate", "1e-6",
        "--warmup_ratio", "0", "--report_to", "none", "--save_strategy", "no", "--train_sampling_strategy",
        "sequential", "--use_cpu", "true", "--overwrite_output_dir", "true", "--output_dir", str(folder / "out"),
        *(["--sequence_parallel_size", str(size)] if size > 1 else []), *a.train_args,
    ]  # fmt: skip
    started = time.perf_counter()
    launch(folder, size, [str(Path(__file__).resolve()), "--worker", str(folder), *train], "train.log")
    ranks = [json.loads(p.read_text()) for p in sorted(folder.glob(RANK_FILE.format("*")))]
    if len(ranks) != size:
        raise SystemExit(f"SP {size}: {len(ranks)} of {size} processes wrote their memory ({folder})")
    step_memory = [r["training_peak"] - r["rss_at_first_step"] for r in ranks if r["training_peak"] is not None]
    return {
        "sequence_parallel_size": size,
        "processes": size,
        "threads_per_process": ranks[0]["threads"],
        "peak_gib": max(r["peak"] for r in ranks) / GB,
        "training_peak_gib": max(r["training_peak"] for r in ranks) / GB if len(step_memory) == size else None,
        "step_memory_gib": max(step_memory) / GB if len(step_memory) == size else None,
        "rss_at_first_step_gib": max(r["rss_at_first_step"] for r in ranks) / GB,
        "step_seconds": [max(r["step_seconds"][i] for r in ranks) for i in range(len(ranks[0]["step_seconds"]))],
        "step_peaks_gib": [max(r["step_peaks"][i] for r in ranks) / GB for i in range(len(ranks[0]["step_peaks"]))],
        "wall_seconds": time.perf_counter() - started,
        "per_process": ranks,
    }


def ratio(value, base):
    return value / base if value is not None and base else None


def markdown(a, rows: list[dict]) -> str:
    base = rows[0]
    lines = [
        f"Sequence parallelism, per-process peak RSS: pairs of 2 x {a.length} tokens, batch 1, {a.method}, "
        f"vocabulary {a.vocab}, fp32, sdpa, padded, ZeRO-3 (CPU processes; `{a.command}`)",
        "",
        "| SP | processes | threads each | peak (GiB) | vs SP 1 | training peak (GiB) | vs SP 1 | step memory (GiB) "
        "| vs SP 1 | RSS before step 1 (GiB) | step time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, spec=".2f": "-" if v is None else format(v, spec)  # noqa: E731
    for row in rows:
        lines.append(
            f"| {row['sequence_parallel_size']} | {row['processes']} | {row['threads_per_process']} "
            f"| {fmt(row['peak_gib'])} | {fmt(ratio(row['peak_gib'], base['peak_gib']))} "
            f"| {fmt(row['training_peak_gib'])} | {fmt(ratio(row['training_peak_gib'], base['training_peak_gib']))} "
            f"| {fmt(row['step_memory_gib'])} | {fmt(ratio(row['step_memory_gib'], base['step_memory_gib']))} "
            f"| {fmt(row['rss_at_first_step_gib'])} | {', '.join(fmt(s, '.1f') for s in row['step_seconds'])} |"
        )
    return "\n".join(lines) + "\n"


def check_dp(work: Path) -> int:
    """4 processes (SP 2 x DP 2) against 2 (DP 2) on the built-in task: the same per-step metrics and weights."""
    import torch
    from safetensors.torch import load_file

    outputs = {}
    for name, processes, extra in (("dp2", 2, []), ("sp2xdp2", 4, ["--sequence_parallel_size", "2"])):
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / "out"
        program = ["-m", "amapo.cli", *CHECK_ARGS, *extra, "--output_dir", str(out), "--overwrite_output_dir", "true"]
        started = time.perf_counter()
        launch(folder, processes, program, "train.log")
        print(f"{name}: {processes} processes, {time.perf_counter() - started:.0f} s", flush=True)
        outputs[name] = out
    logs = {
        name: [log for log in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in log]
        for name, out in outputs.items()
    }
    failures = []
    for step, (want, got) in enumerate(zip(logs["dp2"], logs["sp2xdp2"], strict=True), start=1):
        for key in (k for k in CHECKED if k in want):
            if abs(got[key] - want[key]) > 1e-5 * max(1.0, abs(want[key])):
                failures.append(f"step {step} {key}: DP 2 {want[key]} vs SP 2 x DP 2 {got[key]}")
    want_weights, got_weights = (load_file(outputs[n] / "model.safetensors") for n in ("dp2", "sp2xdp2"))
    for key, tensor in want_weights.items():
        difference = (got_weights[key] - tensor).abs().max().item()
        if difference > 1e-5 or not torch.isfinite(got_weights[key]).all():
            failures.append(f"weight {key}: max difference {difference:.2e}")
    print("\n".join(failures) or f"SP 2 x DP 2 == DP 2: {len(logs['dp2'])} steps' metrics and the final weights")
    return 1 if failures else 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=8192, help="tokens per sequence (chosen and rejected alike)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2], help="SP sizes; the first is the baseline")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--method", default="amapo")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden_size", type=int)
    parser.add_argument("--num_layers", type=int)
    parser.add_argument("--num_heads", type=int)
    parser.add_argument("--train_args", nargs=argparse.REMAINDER, default=[], help="more `amapo train` options")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    parser.add_argument("--check_dp", action="store_true", help="check SP 2 x DP 2 == DP 2 instead (4 processes)")
    a = parser.parse_args()
    a.command = "python benchmarks/sequence_parallel_memory.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="sp-memory-") as temporary:
        work = a.work or Path(temporary)
        if a.check_dp:
            return check_dp(work)
        model_dir, data = build_work_folder(a, work)
        rows = []
        for size in a.sizes:
            rows.append(measure(a, work, size, model_dir, data))
            print(f"SP {size}: peak {rows[-1]['peak_gib']:.2f} GiB, step memory {rows[-1]['step_memory_gib']} GiB",
                  flush=True)  # fmt: skip
    table = markdown(a, rows)
    print(table)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": a.command, "length": a.length, "method": a.method, "vocab": a.vocab, "runs": rows}
        a.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
        a.out.with_suffix(".md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
