#!/usr/bin/env python
"""Benchmark one preference-optimization training step across implementations, on one model and one data file.

Run ``python benchmarks/preference_step.py --help`` for the options; ``benchmarks/README.md`` has examples.

What runs
---------
For every vocabulary size V (default 32000 and 128256) the script builds, once, in a work folder:

* a Llama-architecture model (default hidden 256, 4 layers, MLP 688, 4 heads; `--hidden_size` ... `--num_kv_heads`
  change it), untied embeddings, random init with a fixed seed, saved with ``save_pretrained`` (safetensors);
  float32 on CPU, bfloat16 when a GPU is used;
* a word-level tokenizer of exactly V tokens (``w0`` .. ``w{V-5}`` plus ``<pad> <unk> <bos> <eos>``; BOS is
  added by the tokenizer's post-processor), so the text "w5 w17 w3" is exactly the ids of those words and every
  sequence length is known in advance;
* N preference pairs as JSONL (``prompt``, ``chosen``, ``rejected``, plain strings; responses start with a
  space so that ``prompt + response`` splits into the same words). Lengths are seeded and the same for every V:
  prompt P words, P uniform in [min_len/2, max_len/2]; responses C, R uniform so that P + C and P + R lie in
  [min_len, max_len]. In tokens, a sequence is BOS + P + C + EOS.

Each framework then trains ``warmup + steps`` optimizer steps on that same file, in a fresh subprocess (so peak
RSS is per framework), and the parent alternates them: for each round, each framework once (the order rotates
between rounds). ``--plan`` gives several lengths (groups of length, rounds and frameworks, run in order; one table
per vocabulary and length, and a memory-headroom table across lengths); ``--time_budget`` leaves out the workers
at the end of the plan that would not finish in time. Every Trainer-based worker uses
``train_sampling_strategy="sequential"`` (no shuffling), so step k of every framework trains pairs
[k*B, (k+1)*B) of the file: the same batches everywhere, and the step-1 losses (computed before any update) must
agree between implementations of the same loss.

Frameworks: ``amapo-simpo``, ``amapo-amapo``, ``amapo-dpo`` (this project's ``run_training``),
``trl-cpo-simpo`` (TRL's ``CPOTrainer``, loss_type="simpo", cpo_alpha=0 i.e. pure SimPO), ``trl-cpo-simpo-liger``
(the same with ``use_liger_kernel=True``: Liger's RMSNorm, SwiGLU and RoPE kernels in the model; GPU only, not in
the default set), ``trl-dpo`` (TRL's
``DPOTrainer``, reference model loaded by TRL from the same folder), ``liger-simpo`` (a hand-written loop: the
backbone's hidden states into Liger's ``LigerFusedLinearSimPOLoss`` with the LM head weight; only when
``liger-kernel`` imports). SimPO everywhere: beta 2.0, gamma 1.0 (amapo: gamma_beta_ratio 0.5). DPO: beta 0.1.
Shared settings: AdamW as ``transformers.Trainer`` builds it, constant learning rate 1e-6, no warm-up schedule,
gradient clipping 1.0, gradient accumulation 1, no gradient checkpointing unless ``--gradient_checkpointing`` (then
on for every framework; TRL's configs default it on, so it is set either way and all frameworks do the same work),
logging every step, no checkpoints.

What is measured
----------------
* step time: for Trainer-based workers, the wall time between consecutive ``on_step_end`` callbacks (the first
  measured step is timed from the ``on_step_end`` of the last warm-up step; with ``--warmup 0`` from
  ``on_step_begin`` of step 1), so it includes fetching and collating the batch and the per-step logging. For the
  Liger loop: collate + forward + backward + clip + optimizer step + ``loss.item()``. On CUDA the device is
  synchronized at each boundary. Warm-up steps are never measured.
* tokens of a step: the logical non-pad tokens of the step's pairs, the same count for every framework:
  sum over the B pairs of len(BOS+prompt+chosen+EOS) + len(BOS+prompt+rejected+EOS), from the data order.
  Workers also count the non-pad tokens of the batches their collator really produced (``observed``); a
  mismatch is printed as a warning (a layout that shares the prompt processes fewer tokens than it is credited
  with: tokens/s then measures pairs of a given length per second, which is what a user cares about).
* tokens/s: per measured step, tokens / step time; the table shows the median over all measured steps of all
  rounds. Step time: the median likewise.
* peak RSS: the worker's own high-water mark (VmHWM; includes loading and tokenizing). Not ``getrusage``'s
  ru_maxrss, which Linux carries across fork and exec, so that every worker reported its parent's peak. On CUDA
  also ``torch.cuda.max_memory_allocated``. RSS increase (JSON only): peak RSS minus the RSS right before the
  first training step. The table shows the largest over rounds.
* memory per phase: the worker's peaks of its set-up (start to the first step), its first step (amapo's
  first-batch self-check runs there) and its steady steps (every step after the first), RSS on a CPU and CUDA on a
  GPU, each mark reset between phases (``/proc/self/clear_refs``, ``torch.cuda.reset_peak_memory_stats``). A
  first step that needs more than 1.1x the steady peak is flagged in the table and in a warning line.
* the first worker of a run: on the H200 it ran slow from its third step on, whichever framework it was, so
  before the rounds one unmeasured worker runs (``--no-warmup_worker`` skips it); the table shows each round's
  median beside the overall one.
* ``--amapo_baseline DIR`` (another checkout, e.g. ``git worktree add /tmp/old 715727a``): every amapo framework
  also runs from DIR's ``src``, named ``NAME@<commit>``, in the same rounds: a change is measured side by side with
  the commit before it.
* ``--rehearse`` (a CPU rehearsal of a GPU plan): an entry that cannot run here (a GPU-only option or framework,
  or liger-kernel missing) is not left out but runs its set-up (config, model, data, Trainer, first batch; stand-ins
  for a missing liger-kernel) and stops before its first step, reported as "set-up ok" (``prefstep/setup_only.py``).
  TRL DPO's worker records whether its default fused LM head was patched in and used (``settings.fused_lm_head``).
* step-1 loss: the Trainer's logged ``loss`` of step 1 (the model before any update, on the first batch).
  A separate ``losscheck`` worker also computes the SimPO loss of the first ``--losscheck_batch`` pairs with
  TRL's ``CPOTrainer.compute_loss`` on a batch from its own collator, with amapo (``run_training`` with
  max_steps=1, learning rate 0, its logged step-1 loss; a compute_loss before any update) and with Liger, and
  prints the values and their differences.

Model FLOPs and MFU (the same definition for every framework)
-------------------------------------------------------------
Per step, with N = non-embedding parameters (the transformer blocks and the final norm: neither the input
embedding nor the LM head), H = hidden size, L = layers, V = vocabulary, T = the step's tokens (above),
R = the step's response tokens (response + EOS of chosen and rejected: the tokens whose log-prob the loss needs),
and S = sum over the step's 2B sequences of len(sequence)^2::

    flops = 6*N*T  +  6*H*V*R  +  6*L*H*S        (dense layers, LM head on the needed positions, causal attention)

(forward + backward = 3 x forward; attention QK^T and AV are 2 * 2*H*len^2 per layer forward, halved for causal
masking.) Reference-based losses (amapo-dpo, trl-dpo) add the reference forward, 1/3 of that: flops * 4/3.
Work an implementation does beyond this (logits at prompt and pad positions, gradient checkpointing recompute)
is not counted; work it skips (a shared prompt) is still counted. MFU = (flops / step time) / peak, where peak
is this machine's measured matmul throughput, measured once by the parent: the median of 10 fp32
2048x2048x2048 ``torch.matmul`` on CPU, or bf16 4096^3 on CUDA; MFU is the median over measured steps.

Output
------
A markdown table per vocabulary (framework | tokens/s | step time | peak RSS | RSS increase | [CUDA max
allocated] | MFU | step-1 loss | ratios of tokens/s and of peak RSS to trl-cpo-simpo), the machine, the
versions and the exact command; all raw numbers (every step of every round) go to the ``--out`` JSON, the tables
also to the same path with ``.md``. A worker that fails (an exception, a timeout, killed e.g. out of memory) is
reported as failed with its error; the run goes on.

Where the code is
-----------------
This file keeps the command line (``parse_args``), the parent loop (``parent_main``) and ``main``, which runs a
worker when the parent re-invokes this file with ``--worker NAME``. The rest is in ``benchmarks/prefstep/``, in the
order of the sections above:

* ``data.py``: the tokenizer, the model, the pairs (What runs); token counts per step and ``model_flops`` (FLOPs);
* ``frameworks.py``: each framework's training run with the shared settings (What runs);
* ``measure.py``: the step timer, the batches the collators produced, RSS, the peak matmul (What is measured);
* ``workers.py``: a worker process, the loss check, its ``PREFSTEP_RESULT`` line; ``runner.py``: the parent's side;
* ``report.py``: medians, peaks, MFU per framework and the tables (Output); ``common.py``: shared constants.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

# The pieces live in benchmarks/prefstep/. This file runs as a script (python benchmarks/preference_step.py, and
# each worker is this file again) and is also loaded by path (benchmarks/gpu_check.py): either way, import the
# package from the folder this file is in.
_BENCHMARKS = str(Path(__file__).resolve().parent)
if _BENCHMARKS not in sys.path:
    sys.path.insert(0, _BENCHMARKS)

from prefstep.common import (  # noqa: E402
    AMAPO_OPTIONS,
    DEFAULT_FRAMEWORKS,
    FRAMEWORKS,
    GPU_ONLY_FRAMEWORKS,
    GPU_ONLY_OPTIONS,
    REPO_ROOT,
    framework_options,
    known_framework,
    liger_status,
    needs_liger,
)
from prefstep.data import (  # noqa: E402  (memory_vs_length.py calls build_tokenizer, build_model, model_shape here)
    build_model,
    build_tokenizer,
    make_pairs,
    model_shape,
    pair_token_stats,
    step_token_stats,
)
from prefstep.measure import machine_info  # noqa: E402
from prefstep.plan import TimeBudget, parse_plan, plan_frameworks, rotated  # noqa: E402
from prefstep.report import (  # noqa: E402
    case_section,
    headroom_section,
    progress_text,
    report_header,
    summarize,
)
from prefstep.runner import baseline_frameworks, probe_device, run_worker  # noqa: E402
from prefstep.workers import worker_main  # noqa: E402

# not settings of the run: the report leaves them out
INTERNAL_ARGS = (
    "worker",
    "model_dir",
    "data",
    "output_dir",
    "with_liger",
    "profile_trace",
    "setup_only",
    "setup_only_names",
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark one preference-optimization step: amapo vs TRL (vs Liger), same model and data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256], help="vocabulary sizes to run")
    p.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--min_len", type=int, default=256, help="min words of prompt + response")
    p.add_argument("--max_len", type=int, default=512, help="max words of prompt + response")
    p.add_argument("--steps", type=int, default=4, help="measured optimizer steps per worker")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured optimizer steps before them")
    p.add_argument("--rounds", type=int, default=2, help="times each framework runs, alternating")
    p.add_argument("--warmup_worker", action=argparse.BooleanOptionalAction, default=True,
                   help="run one unmeasured worker (the first framework) before the rounds")  # fmt: skip
    p.add_argument("--frameworks", nargs="+", default=list(DEFAULT_FRAMEWORKS),
                   help=f"any of {', '.join(FRAMEWORKS)}; an amapo one may add +OPTION ... "
                   f"({', '.join(AMAPO_OPTIONS)}), e.g. amapo-amapo+flex+compile")  # fmt: skip
    p.add_argument("--plan", default=None, metavar="'MIN:MAX xR: F ...; ...'",
                   help="groups of (length, rounds, frameworks) run in this order, instead of --min_len, --max_len, "
                   "--rounds and --frameworks (e.g. '1024:2048 x2: amapo-amapo trl-cpo-simpo; 4096:8192 x1: "
                   "amapo-amapo')")  # fmt: skip
    p.add_argument("--time_budget", type=float, default=0,
                   help="seconds the run may take (0: no limit); a worker that would end past it is not started "
                   "and is reported as not run")  # fmt: skip
    p.add_argument("--rehearse", action="store_true",
                   help="an entry that cannot run here (a GPU-only option or framework, or liger-kernel missing) "
                   "runs its set-up only (benchmarks/prefstep/setup_only.py) and is reported as 'set-up ok', "
                   "instead of being left out")  # fmt: skip
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/<cpu|cuda>.json)")
    p.add_argument("--lr", type=float, default=1e-6, help="constant learning rate")
    p.add_argument("--seed", type=int, default=0, help="model init, data and trainer seed")
    p.add_argument("--pairs", type=int, default=None, help="pairs in the data file (default: enough for all steps)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every process (default: torch's)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amapo_layout", default=None, help="amapo TrainConfig.batch_layout")
    p.add_argument("--amapo_lm_head_chunk_size", type=int, default=None, help="amapo TrainConfig.lm_head_chunk_size")
    p.add_argument("--amapo_baseline", default=None, metavar="DIR",
                   help="another amapo checkout (e.g. a git worktree of an older commit): its amapo-* frameworks run "
                   "beside this one's, named NAME@<its commit>")  # fmt: skip
    shape = p.add_argument_group("model shape (Llama architecture; default hidden 256, 4 layers, MLP 688, 4 heads)")
    shape.add_argument("--hidden_size", type=int, default=None)
    shape.add_argument("--num_layers", type=int, default=None)
    shape.add_argument("--intermediate_size", type=int, default=None)
    shape.add_argument("--num_heads", type=int, default=None, help="attention heads")
    shape.add_argument("--num_kv_heads", type=int, default=None, help="key/value heads (grouped-query attention)")
    p.add_argument("--liger_chunk_size", type=int, default=1, help="pairs per chunk in Liger's fused loss")
    p.add_argument("--liger_no_compile", action="store_true", help="Liger with compiled=False (default: compiled)")
    p.add_argument("--gradient_checkpointing", action="store_true",
                   help="activation (gradient) checkpointing on for every framework (default: off for every "
                   "one)")  # fmt: skip
    p.add_argument("--no_losscheck", action="store_true", help="skip the separate step-1 SimPO loss check")
    p.add_argument("--losscheck_batch", type=int, default=8, help="pairs in the loss check's batch")
    p.add_argument("--workdir", default=None, help="where models, data and logs go (default: a temp folder)")
    p.add_argument("--keep_workdir", action="store_true", help="keep the work folder (logs) at the end")
    p.add_argument("--worker_timeout", type=float, default=3600, help="seconds before a worker is stopped")
    # internal: the parent starts workers with these
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model_dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    p.add_argument("--output_dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--with_liger", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--setup_only", action="store_true", help=argparse.SUPPRESS)  # a worker of --rehearse
    p.add_argument("--profile_trace", default=None, help=argparse.SUPPRESS)  # gpu_profile.py: a trace of the last steps
    a = p.parse_args(argv)
    if a.min_len < 2 or a.max_len < a.min_len:
        p.error("need 2 <= min_len <= max_len")
    if a.batch < 1 or a.steps < 1 or a.warmup < 0 or a.rounds < 1:
        p.error("need batch >= 1, steps >= 1, warmup >= 0, rounds >= 1")
    unknown = [name for name in [*plan_frameworks(a.plan), *a.frameworks] if not known_framework(name)]
    if unknown:
        p.error(
            f"unknown frameworks {unknown} (choose from {', '.join(FRAMEWORKS)}; amapo ones may add "
            f"+OPTION: {', '.join(AMAPO_OPTIONS)})"
        )
    return a


def parent_main(a) -> int:
    import torch

    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    cuda = a.device == "cuda"
    out = Path(a.out) if a.out else REPO_ROOT / "benchmarks" / "results" / f"{a.device}.json"
    command = shlex.join([sys.executable, *sys.argv])

    liger_ok, liger_text = liger_status()
    a.with_liger = liger_ok
    requested = plan_frameworks(a.plan) or a.frameworks
    frameworks, dropped = runnable_frameworks(requested, liger_ok, cuda)
    a.setup_only_names = {}
    if a.rehearse:  # what cannot run here runs its set-up, then stops
        frameworks, dropped, a.setup_only_names = list(requested), {}, dropped
    liger_line = f"liger: available ({liger_text})" if liger_ok else f"liger: not available ({liger_text})"
    groups = parse_plan(a.plan, a, frameworks)
    baseline_src = {}
    for group in groups:  # NAME@commit beside each amapo framework
        baseline_src |= baseline_frameworks(a, group.frameworks)
    lengths = list(dict.fromkeys((g.min_len, g.max_len) for g in groups))

    n_steps = a.warmup + a.steps
    n_pairs = a.pairs or max(a.batch * n_steps, a.losscheck_batch) + a.batch
    if n_pairs < a.batch * n_steps:
        raise SystemExit(f"--pairs {n_pairs} < batch * (warmup + steps) = {a.batch * n_steps}")

    workdir = Path(a.workdir).resolve() if a.workdir else Path(tempfile.mkdtemp(prefix="preference_step_"))
    workdir.mkdir(parents=True, exist_ok=True)
    budget = TimeBudget(a.time_budget)
    machine = machine_info(cuda)
    probe = probe_device(a, workdir)
    peak = probe["peak_matmul"]
    machine |= {key: probe[key] for key in ("gpu", "gpu_memory_gb") if key in probe}
    print(f"command: {command}")
    print(f"machine: {machine['cpu']}, {machine['cpus_usable']} usable CPUs of {machine['cpu_count']}"
          + (f", GPU {machine['gpu']}" if cuda else "") + f", torch threads {machine['torch_threads']}")  # fmt: skip
    print("versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    print(liger_line)
    for name, why in dropped.items():
        print(f"{name}: not run ({why})")
    for name, why in a.setup_only_names.items():
        print(f"{name}: set-up only ({why})")
    print(f"work folder: {workdir}")

    print(f"peak matmul: {peak['gflops_per_s']:.1f} GFLOP/s ({peak['what']}, {peak['threads']} threads)")

    report: dict = {
        "command": command,
        "machine": machine,
        "liger": liger_line,
        "settings": {k: v for k, v in vars(a).items() if k not in INTERNAL_ARGS}
        | {
            "frameworks_run": frameworks,
            "not_run": dropped,
            "setup_only": a.setup_only_names,
            "pairs": n_pairs,
            "device": a.device,
            "plan": [vars(g) for g in groups],
        },
        "peak_matmul": peak,
        "flops_definition": "6*N_nonembedding*tokens + 6*hidden*vocab*response_tokens + 6*layers*hidden*sum(len^2), "
        "x4/3 for reference-based losses (see the script's docstring)",
        "cases": {},
    }
    tables = []

    def save() -> None:  # partial results survive a crash or a stopped run
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str))

    try:
        for vocab in a.vocab:
            print(f"\n=== vocab {vocab} ===", flush=True)
            model_dir = workdir / f"model-v{vocab}"
            model_dir.mkdir(parents=True, exist_ok=True)
            build_tokenizer(vocab, model_dir)
            longest = max(max_len for _, max_len in lengths)
            model_info = build_model(vocab, model_dir, a.seed, longest, cuda, model_shape(a))
            os.sync()  # the model's pages on disk now, not written back during a worker's steps
            cases = {}
            for min_len, max_len in lengths:
                key = case_key(vocab, min_len, max_len)
                cases[key] = case = case_data(a, vocab, min_len, max_len, n_pairs, n_steps, workdir, model_dir)
                case["data"]["model"] = model_info
                report["cases"][key] = case
            first = case_key(vocab, groups[0].min_len, groups[0].max_len)
            paths, first_args = cases[first]["paths"], case_args(a, groups[0])
            if not a.no_losscheck:
                cases[first]["losscheck"] = run_unmeasured(f"[{first}] losscheck", first_args, "losscheck", vocab,
                                                           paths, workdir, f"v{vocab}-losscheck")  # fmt: skip
            if a.warmup_worker:  # the first worker of a run is slow on a GPU (issue 25): one that counts for nothing
                name = groups[0].frameworks[0]
                cases[first]["warmup_worker"] = run_unmeasured(
                    f"[{first}, warm-up worker, not measured] {name}", first_args, name, vocab, paths, workdir,
                    f"v{vocab}-warmup-{name}", baseline_src.get(name))  # fmt: skip
            for g, group in enumerate(groups):
                key = case_key(vocab, group.min_len, group.max_len)
                case, args = cases[key], case_args(a, group)
                for round_index in range(group.rounds):
                    for name in rotated(group.frameworks, round_index):
                        label = f"[{key}, group {g + 1}, round {round_index + 1}/{group.rounds}] {name}"
                        print(f"{label} ...", end=" ", flush=True)
                        if budget.allows(key, name):
                            args.worker_timeout = min(a.worker_timeout, budget.left())
                            tag = f"v{vocab}-{group.length}-g{g + 1}-r{round_index + 1}-{name}"
                            result = run_worker(args, name, vocab, case["paths"], workdir, tag, baseline_src.get(name))
                            budget.record(key, name, result["process_wall_s"])
                        else:
                            result = budget.not_run(key, name)
                        case["runs"].setdefault(name, []).append(result)
                        print(progress_text(result), flush=True)
                        save()
            for key, case in cases.items():
                case["summary"] = {
                    name: summarize(name, runs, case["data"]["steps"], case["data"], peak["flops_per_s"])
                    for name, runs in case["runs"].items()
                }
                table = case_section(a, key, case, peak, cuda)
                tables.append(table)
                print("\n" + table, flush=True)
            headroom = headroom_section(cases, machine, cuda)
            if headroom:
                tables.append(headroom)
                print("\n" + headroom, flush=True)
    finally:
        header = report_header(command, machine, liger_line, peak, cuda)
        markdown = "\n".join(header) + "\n" + "\n\n".join(tables) + "\n"
        report["markdown"] = markdown
        save()
        out.with_suffix(".md").write_text(markdown)
        print(f"\nresults: {out} (and {out.with_suffix('.md').name})")
        if a.keep_workdir or a.workdir:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_unmeasured(label: str, args, name: str, vocab: int, paths: dict, workdir: Path, tag: str, src=None) -> dict:
    """A worker outside the rounds (the loss check, the warm-up worker), its progress line "LABEL ... ok"."""
    print(f"{label} ...", end=" ", flush=True)
    result = run_worker(args, name, vocab, paths, workdir, tag, src)
    print("ok" if result.get("ok") else f"FAILED: {result.get('error')}", flush=True)
    return result


def runnable_frameworks(names: list[str], liger_ok: bool, cuda: bool) -> tuple[list[str], dict[str, str]]:
    """The frameworks that can run here, and why each other one cannot."""
    dropped = {}
    for name in names:
        options = framework_options(name)
        gpu_only = [GPU_ONLY_OPTIONS[o] for o in options if o in GPU_ONLY_OPTIONS]
        if needs_liger(name) and not liger_ok:
            dropped[name] = "liger-kernel does not import"
        elif name in GPU_ONLY_FRAMEWORKS and not cuda:
            dropped[name] = "Liger's Triton kernels need a GPU"
        elif gpu_only and not cuda:
            dropped[name] = gpu_only[0]
    return [n for n in dict.fromkeys(names) if n not in dropped], dropped


def case_key(vocab: int, min_len: int, max_len: int) -> str:
    return f"vocab {vocab}, {min_len}-{max_len} words"


def case_args(a, group):
    """The worker options of a group's length (its training configs' max_length follow max_len)."""
    args = copy.copy(a)
    args.min_len, args.max_len = group.min_len, group.max_len
    return args


def case_data(a, vocab, min_len, max_len, n_pairs, n_steps, workdir, model_dir) -> dict:
    """The pairs of one length (the same seed for every length), their token counts per step, the paths."""
    rows = make_pairs(n_pairs, vocab, min_len, max_len, a.seed)
    data = workdir / f"pairs-v{vocab}-{min_len}-{max_len}.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {
        "vocab": vocab,
        "min_len": min_len,
        "max_len": max_len,
        "data": {
            "pairs": n_pairs,
            "steps": step_token_stats(rows, a.batch, n_steps),
            "mean_pair_tokens": statistics.mean(pair_token_stats(r)["tokens"] for r in rows),
        },
        "paths": {"model_dir": model_dir, "data": data},
        "runs": {},
    }


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.worker:
        return worker_main(a)
    return parent_main(a)


if __name__ == "__main__":
    sys.exit(main())
