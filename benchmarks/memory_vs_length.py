#!/usr/bin/env python
"""Peak memory and tokens/s against pair length, amapo against TRL and Liger, and the longest pair each fits in a
given memory (issue 35, item 2).

What runs
---------
``preference_step.py``'s workers, one process per framework and length (``prefstep/runner.py``), on its model and
data: a Llama-architecture model (default hidden 256, 4 layers, MLP 688, 4 heads; its ``--hidden_size`` ...
options pass through), a word-level tokenizer of ``--vocab`` tokens (default 32,000), batch 8, ``--warmup`` 1 +
``--steps`` 1 optimizer steps (the steady peak needs the second step: AdamW's state exists from the first step's
update on), fp32 on a CPU, bf16 on a GPU. A *pair length* L is the words of prompt + response: every pair of a
length has a prompt of L/2 words and two responses of L/2 words (``make_pairs`` with min_len = max_len = L), so
each of its two sequences is L + 2 tokens (BOS, EOS) and no batch has padding. Activation (gradient) checkpointing
is the same for every framework: off, as in ``preference_step.py``, or on with ``--gradient_checkpointing`` (TRL's
configs default it on; run both to see how it composes with the layouts and the chunked head). Frameworks
(default): amapo's default (``amapo-amapo``: AMaPO, its default layout and chunked LM head), TRL 1.16's
``DPOTrainer`` with its default fused LM head (``trl-dpo``), TRL's CPO-SimPO (``trl-cpo-simpo``) and the Liger
loop (``liger-simpo``, where liger-kernel imports; otherwise reported as not run).

1. **Sweep.** Each framework at each ``--lengths`` (CPU: 512 to 16,384 words; GPU: 2,048 to 32,768), shortest
   first; once a length does not fit the cap, the framework's longer lengths are not run (memory grows with length).
2. **Fit.** Per framework, least squares over the sweep's lengths that ran: peak = a + b*L + c*L^2 (3 or more
   lengths; 2: a + b*L), L in words per pair; the table gives a in GiB, b in MiB per 1,024 words, c in MiB per
   (1,024 words)^2, and the largest residual.
3. **Bisection.** Per framework, the longest length that fits the cap (``--cap_gib``: 16 GiB on a CPU, the GPU's
   memory on a GPU): bracketed by the sweep (the longest length that fits, the shortest longer one that does not);
   when every length fits, the first probe is just past the fit's length at the cap (or twice the longest), up to
   ``--max_probe_length``; then midpoints (multiples of 16 words) until the bracket is within ``--tolerance``
   (10%) or after ``--max_probes`` (4) probes. Out of memory is a result: "fits" means the worker ran to the end
   with its peak (RSS on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU) at most the cap; a CUDA out of memory,
   a worker killed by the OOM killer, or one above the cap does not fit. On a CPU the cap is enforced, so that the
   machine survives: the parent reads the worker's RSS (and its children's) every 50 ms and kills it above the cap
   (``run_worker(memory_cap=...)``; not RLIMIT_AS, which torch's address-space reservations trip long before RSS).
   A worker that fails otherwise (an error, a timeout) ends that framework's bisection, reported.

What is measured: peak memory is the worker's own (VmHWM on a CPU: imports, loading and tokenizing included; CUDA
max allocated on a GPU); tokens/s is the median over measured steps of the step's tokens (chosen and rejected
sequences, BOS and EOS counted, as ``preference_step.py`` counts them) over its wall time.

Output: a markdown table of peaks (with the fit and the longest length that fits), one of tokens/s, issue 35's CPU
goals with whether each is met (amapo's peak at ``--goal_length`` 2,048 words <= 0.5x TRL DPO's; the longest pair
fitting 16 GiB >= 2x TRL DPO's), a PNG (peak against length per framework, the fit, the cap) and every number in a
JSON: ``--out`` (default ``benchmarks/results/memory_vs_length-<cpu|cuda>.json``) and the same path with ``.md`` and
``.png``. ``--resume OUT.json`` reuses a previous run's workers (same settings): a stopped run goes on where it
was, and another cap re-bisects without measuring the sweep again.

Commands
--------
CPU, the machine to itself (this project's 2-vCPU, 23.5 GB machine: the 16 GiB cap leaves it room; about 2-3 hours,
an estimate from BENCHMARKS.md's step times at 256-512 words scaled with length, not measured: the sweep about an
hour, most of it trl-dpo and amapo at 4-16k words, and up to 4 probes per framework near its limit, those that do
not fit stopped early by the cap)::

    python benchmarks/memory_vs_length.py --device cpu --keep_workdir

GPU (one H100 or H200, lengths 2k-32k, the cap the GPU's memory; about 10-15 minutes, an estimate from the H200's
worker times of 20-30 s, mostly start-up)::

    pip install liger-kernel   # optional: the Liger loop
    python benchmarks/memory_vs_length.py --device cuda

Toy size (``tests/test_memory_vs_length.py``; about a minute)::

    python benchmarks/memory_vs_length.py --device cpu --vocab 311 --hidden_size 32 --num_layers 2 \\
        --intermediate_size 64 --num_heads 4 --num_kv_heads 2 --threads 1 --lengths 128 256 512 \\
        --frameworks amapo-amapo --cap_gib 4 --max_probes 0 --out /tmp/mvl/toy.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

_BENCHMARKS = str(Path(__file__).resolve().parent)
if _BENCHMARKS not in sys.path:
    sys.path.insert(0, _BENCHMARKS)

import preference_step  # noqa: E402  (its parser checks the worker options; its builders make the model and data)
from prefstep.common import GB, REPO_ROOT, liger_status  # noqa: E402
from prefstep.measure import machine_info  # noqa: E402
from prefstep.report import progress_text, summarize  # noqa: E402
from prefstep.runner import probe_device, run_worker  # noqa: E402

FRAMEWORKS = ["amapo-amapo", "trl-dpo", "trl-cpo-simpo", "liger-simpo"]
LENGTHS = {"cpu": [512, 1024, 2048, 4096, 8192, 16384], "cuda": [2048, 4096, 8192, 16384, 32768]}
CPU_CAP_GIB = 16
GOAL_FRAMEWORK, GOAL_BASELINE = "amapo-amapo", "trl-dpo"  # issue 35's CPU goals compare these two
GOAL_PEAK_RATIO, GOAL_LENGTH_RATIO = 0.5, 2.0
STEP_WORDS = 16  # probes are multiples of this
KIB = 1024  # the fit's length unit: 1,024 words
MIB = 1024**2
# the settings a worker's peak depends on: --resume reuses a run only when they are the same
WORKER_SETTINGS = ("vocab", "batch", "steps", "warmup", "lr", "seed", "device", "threads", "amapo_layout",
                   "amapo_lm_head_chunk_size", "liger_chunk_size", "liger_no_compile", "hidden_size", "num_layers",
                   "intermediate_size", "num_heads", "num_kv_heads", "gradient_checkpointing")  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
        epilog="Any other option of preference_step.py that sets a worker passes through (--hidden_size, "
        "--num_layers, --intermediate_size, --num_heads, --num_kv_heads, --threads, --seed, --lr, --amapo_layout, "
        "--amapo_lm_head_chunk_size, --liger_chunk_size, --liger_no_compile, --gradient_checkpointing, "
        "--worker_timeout).",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="pair lengths, words of prompt + response (default: CPU 512 to 16384, "
                   "GPU 2048 to 32768)")  # fmt: skip
    p.add_argument("--frameworks", nargs="+", default=FRAMEWORKS, help="preference_step.py's names")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--steps", type=int, default=1, help="measured optimizer steps per worker")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured optimizer steps before them")
    p.add_argument("--cap_gib", type=float, default=None,
                   help=f"GiB a length must fit in (default: {CPU_CAP_GIB} on a CPU, the GPU's memory on a "
                   "GPU)")  # fmt: skip
    p.add_argument("--goal_length", type=int, default=2048, help="the length of the peak-ratio goal")
    p.add_argument("--max_probes", type=int, default=4, help="bisection probes per framework (0: the sweep only)")
    p.add_argument("--max_probe_length", type=int, default=None,
                   help="the longest length a probe tries (default: twice the longest of --lengths)")  # fmt: skip
    p.add_argument("--tolerance", type=float, default=0.1,
                   help="the bisection stops when the shortest length that does not fit is within this fraction "
                   "above the longest that does")  # fmt: skip
    p.add_argument("--resume", type=Path, default=None, help="a previous run's JSON: its workers are reused")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON, .md and .png beside it (default: "
                   "benchmarks/results/memory_vs_length-DEVICE.json)")  # fmt: skip
    p.add_argument("--workdir", type=Path, default=None, help="model, data, logs (default: a temp folder)")
    p.add_argument("--keep_workdir", action="store_true", help="keep the work folder (per-worker logs) at the end")
    a, passed = p.parse_known_args(argv)
    if any(n < 2 for n in a.lengths or [2]) or a.max_probes < 0 or a.tolerance <= 0 or a.batch < 1:
        p.error("need lengths >= 2, --max_probes >= 0, --tolerance > 0, --batch >= 1")
    bench_argv = [*passed, "--vocab", str(a.vocab), "--batch", str(a.batch), "--steps", str(a.steps), "--warmup",
                  str(a.warmup), "--rounds", "1", "--frameworks", *a.frameworks]  # fmt: skip
    return a, preference_step.parse_args(bench_argv)  # unknown options and framework names end here, in one line


# --- the fit and the bisection: pure functions ----------------------------------------------------------------------


def fit_peak(points: list[tuple[int, float]]) -> dict | None:
    """Least squares ``peak = a + b*L + c*L^2`` over (length in words, peak in bytes) points: 3 or more points fit all
    three terms, 2 fit a and b (c = 0), fewer fit nothing. L is scaled to 1,024 words for the solve."""
    import numpy as np

    if len(points) < 2:
        return None
    x = np.array([length / KIB for length, _ in points], dtype=np.float64)
    y = np.array([peak for _, peak in points], dtype=np.float64)
    terms = 3 if len(points) >= 3 else 2
    design = np.stack([x**k for k in range(terms)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    a, b, c = (*coef.tolist(), 0.0)[:3]
    residual = float(np.abs(design @ coef - y).max())
    return {
        "terms": terms,
        "points": len(points),
        "a_bytes": a,
        "b_bytes_per_word": b / KIB,
        "c_bytes_per_word2": c / KIB**2,
        "a_gib": a / GB,
        "b_mib_per_1024_words": b / MIB,
        "c_mib_per_1024_words2": c / MIB,
        "max_residual_bytes": residual,
    }


def predict(fit: dict, length: float) -> float:
    return fit["a_bytes"] + fit["b_bytes_per_word"] * length + fit["c_bytes_per_word2"] * length**2


def length_at(fit: dict | None, cap: float) -> float | None:
    """The length where the fitted peak reaches ``cap`` (the larger root), or None where it never grows to it."""
    if fit is None:
        return None
    a, b, c = fit["a_bytes"] - cap, fit["b_bytes_per_word"], fit["c_bytes_per_word2"]
    if abs(c) < 1e-30:
        return -a / b if b > 0 else None
    disc = b * b - 4 * c * a
    if disc < 0:
        return None
    roots = [r for r in ((-b + s * math.sqrt(disc)) / (2 * c) for s in (1, -1)) if r > 0]
    return max(roots) if roots and c > 0 else (min(roots) if roots else None)


def find_longest(fits, known: dict[int, bool | None], *, guess: float | None, limit: int, tolerance: float,
                 max_probes: int, step: int = STEP_WORDS) -> dict:  # fmt: skip
    """The longest length that fits, by bisection. ``known``: lengths already measured (True fits, False does not,
    None failed otherwise); ``fits(length)`` measures another (same values). Memory grows with length, so the answer
    lies between the longest length that fits (``longest``; 0: none does) and the shortest longer one that does not
    (``shortest_not_fitting``; None: none measured). With no such length, the next probe is just past ``guess``
    (the fit's length at the cap) or twice the longest, at most ``limit``; then midpoints, multiples of ``step``.
    Stops when ``shortest_not_fitting <= longest * (1 + tolerance)``, the bracket holds no multiple of ``step``,
    ``max_probes`` probes ran, or a probe failed otherwise. Returns the two lengths, the probes and why it
    stopped."""
    known, probes = dict(known), []
    while True:
        lo = max((n for n, ok in known.items() if ok), default=0)
        hi = min((n for n, ok in known.items() if ok is False and n > lo), default=None)
        if hi is None:
            if lo >= limit:
                stopped = f"fits at the longest length tried ({limit:,} words, --max_probe_length)"
                break
            if not lo and not guess:
                stopped = "no length ran to the end: nothing to bisect from"
                break
            target = guess * (1 + tolerance / 2) if guess and guess > lo else 2 * lo
            target = min(limit, step * math.ceil(target / step))
        else:
            if lo and hi <= lo * (1 + tolerance):
                stopped = f"bracket within {tolerance:.0%}"
                break
            target = step * round((lo + hi) / 2 / step)
            if not lo < target < hi:
                stopped = f"bracket narrower than {step} words"
                break
        if len(probes) >= max_probes:
            stopped = f"{max_probes} probes (--max_probes)" if max_probes else "no probes (--max_probes 0)"
            break
        outcome = fits(target)
        probes.append([target, outcome])
        if outcome is None:
            stopped = f"the probe at {target:,} words failed (not out of memory): see its log"
            break
        known[target] = outcome
    return {"longest": lo, "shortest_not_fitting": hi, "probes": probes, "stopped": stopped}


# --- measuring ------------------------------------------------------------------------------------------------------


def point_of(result: dict, framework: str, length: int, kind: str, case: dict, peak_flops: float, cuda: bool) -> dict:
    """One worker's numbers: did it run, its peak, tokens/s, and whether it ran out of memory (or over the cap)."""
    summary = summarize(framework, [result], case["data"]["steps"], case["data"], peak_flops)
    ran = not summary.get("failed")
    return {
        "length": length,
        "kind": kind,
        "ok": ran,
        "peak_bytes": summary.get("cuda_max_allocated" if cuda else "peak_rss") if ran else None,
        "peak_rss": summary.get("peak_rss"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "step_time_s": summary.get("step_time_s"),
        "out_of_memory": bool(summary.get("out_of_memory")),
        "over_memory_cap": result.get("over_memory_cap"),
        "error": None if ran else "; ".join(summary.get("errors", [])),
        "wall_s": result.get("process_wall_s"),
        "log": result.get("log"),
    }


def fits_cap(point: dict, cap: float) -> bool | None:
    """True: ran, peak at most ``cap``; False: above it, or out of memory; None: failed otherwise (or not run)."""
    if point.get("ok") and point.get("peak_bytes") is not None:
        return point["peak_bytes"] <= cap
    return False if point.get("out_of_memory") else None


def reusable(point: dict, cap: float) -> bool:
    """Whether ``--resume`` may reuse a point at this cap: it ran, or ran out of memory on its own; a point stopped
    by an earlier cap only where it had already gone past this one."""
    if point.get("over_memory_cap") is not None:
        return point["over_memory_cap"] > cap
    return bool(point.get("ok") or point.get("out_of_memory"))


class Runner:
    """Runs (or reuses) one framework at one length, builds each length's data once, saves after every worker."""

    def __init__(self, a, bench, report: dict, workdir: Path, model_dir: Path, peak_flops: float, save) -> None:
        self.a, self.bench, self.report, self.workdir, self.save = a, bench, report, workdir, save
        self.model_dir, self.peak_flops = model_dir, peak_flops
        self.cuda = bench.device == "cuda"
        self.cap = report["cap_bytes"]
        self.cases: dict[int, dict] = {}
        self.reused: dict[str, dict[str, dict]] = {}
        if a.resume:
            previous = json.loads(a.resume.read_text())
            if previous["settings"]["worker"] != report["settings"]["worker"]:
                raise SystemExit(f"--resume {a.resume}: its worker settings differ from this run's "
                                 f"({previous['settings']['worker']} vs {report['settings']['worker']})")  # fmt: skip
            self.reused = previous["points"]

    def case(self, length: int) -> dict:
        if length not in self.cases:
            n_steps = self.bench.warmup + self.bench.steps
            self.cases[length] = case = preference_step.case_data(
                self.bench, self.bench.vocab[0], length, length, self.bench.batch * n_steps, n_steps, self.workdir,
                self.model_dir,
            )  # fmt: skip
            case["data"]["model"] = self.report["model"]
        return self.cases[length]

    def measure(self, framework: str, length: int, kind: str) -> dict:
        label = f"[{length:,} words, {kind}] {framework} ..."
        previous = self.reused.get(framework, {}).get(str(length))
        if previous is not None and reusable(previous, self.cap):
            point = {**previous, "kind": kind, "reused": str(self.a.resume)}
            print(f"{label} reused from {self.a.resume}", flush=True)
        else:
            print(label, end=" ", flush=True)
            args = copy.copy(self.bench)
            args.min_len = args.max_len = length
            case = self.case(length)
            result = run_worker(args, framework, args.vocab[0], case["paths"], self.workdir, f"{framework}-{length}",
                                memory_cap=None if self.cuda else int(self.cap))  # fmt: skip
            print(progress_text(result), flush=True)
            point = point_of(result, framework, length, kind, case, self.peak_flops, self.cuda)
        point["fits"] = fits_cap(point, self.cap)
        self.report["points"].setdefault(framework, {})[str(length)] = point
        self.save()
        return point


def sweep(runner: Runner, frameworks: list[str], lengths: list[int]) -> None:
    """Every framework at every length, shortest first; after a length that does not fit, none longer."""
    too_long: dict[str, int] = {}
    for length in lengths:
        for name in frameworks:
            if name in too_long:
                runner.report["points"].setdefault(name, {})[str(length)] = {
                    "length": length, "kind": "sweep", "ok": False, "fits": False, "skipped": True,
                    "error": f"not run: {too_long[name]:,} words did not fit already",
                }  # fmt: skip
                continue
            if runner.measure(name, length, "sweep")["fits"] is False:
                too_long[name] = length


def analyse(runner: Runner, frameworks: list[str], a) -> None:
    """The fit over the sweep, then the bisection, per framework."""
    limit = a.max_probe_length or 2 * max(a.lengths)
    for name in frameworks:
        points = runner.report["points"].get(name, {}).values()
        sweep_points = [(p["length"], p["peak_bytes"]) for p in points if p["kind"] == "sweep" and p["ok"]]
        fit = fit_peak(sorted(sweep_points))
        guess = length_at(fit, runner.cap)
        runner.report["fits"][name] = fit and {**fit, "length_at_cap": guess}
        known = {p["length"]: p["fits"] for p in points if not p.get("skipped")}
        print(f"[bisection] {name}: the longest length that fits {runner.cap / GB:.3g} GiB", flush=True)
        runner.report["longest"][name] = find_longest(
            lambda length, name=name: runner.measure(name, length, "probe")["fits"], known, guess=guess, limit=limit,
            tolerance=a.tolerance, max_probes=a.max_probes,
        )  # fmt: skip


# --- the report ------------------------------------------------------------------------------------------------------


def goals(report: dict) -> list[dict]:
    """Issue 35's CPU goals, each with its numbers and a verdict: met, NOT met, or why it cannot be said."""
    points, longest, cap = report["points"], report["longest"], report["cap_bytes"]
    goal_length = report["settings"]["goal_length"]
    ours, theirs = (points.get(n, {}).get(str(goal_length), {}) for n in (GOAL_FRAMEWORK, GOAL_BASELINE))
    peak_goal = {"goal": f"{GOAL_FRAMEWORK}'s peak at {goal_length:,} words per pair <= {GOAL_PEAK_RATIO}x "
                 f"{GOAL_BASELINE}'s"}  # fmt: skip
    if ours.get("fits") and theirs.get("fits"):
        ratio = ours["peak_bytes"] / theirs["peak_bytes"]
        peak_goal |= {"value": f"{ratio:.2f}x", "met": ratio <= GOAL_PEAK_RATIO}
    elif ours.get("fits") and theirs.get("fits") is False:  # theirs needs more than the cap (or ran out of memory)
        bound = ours["peak_bytes"] / cap
        peak_goal |= {"value": f"< {bound:.2f}x ({GOAL_BASELINE} does not fit {cap / GB:.3g} GiB)",
                      "met": True if bound <= GOAL_PEAK_RATIO else None}  # fmt: skip
    else:
        peak_goal |= {"value": "not measured at this length", "met": None}
    length_goal = {"goal": f"the longest pair fitting {cap / GB:.3g} GiB: {GOAL_FRAMEWORK} >= {GOAL_LENGTH_RATIO}x "
                   f"{GOAL_BASELINE}"}  # fmt: skip
    ours, theirs = longest.get(GOAL_FRAMEWORK), longest.get(GOAL_BASELINE)
    if ours and theirs and ours["longest"] and theirs["longest"]:
        # each true longest lies in [longest, shortest_not_fitting): the ratio the two brackets allow
        low = ours["longest"] / theirs["shortest_not_fitting"] if theirs["shortest_not_fitting"] else 0.0
        high = ours["shortest_not_fitting"] / theirs["longest"] if ours["shortest_not_fitting"] else math.inf
        ratio = ours["longest"] / theirs["longest"]
        met = True if low >= GOAL_LENGTH_RATIO else False if high <= GOAL_LENGTH_RATIO else None
        bounds = f"the brackets allow {low:.2f}x" + (f" to {high:.2f}x" if high < math.inf else " or more")
        unbounded = [n for n, f in ((GOAL_FRAMEWORK, ours), (GOAL_BASELINE, theirs)) if not f["shortest_not_fitting"]]
        length_goal |= {"value": f"{ours['longest']:,} vs {theirs['longest']:,} words: {ratio:.2f}x ({bounds}"
                        + "".join(f"; {n} fits every length tried" for n in unbounded) + ")", "met": met}  # fmt: skip
    else:
        length_goal |= {"value": "not measured (a framework did not run, or fits no length)", "met": None}
    return [peak_goal, length_goal]


def verdict(goal: dict) -> str:
    return {True: "met", False: "NOT met"}.get(goal["met"], "cannot say (see the value)")


def cell(point: dict | None, value) -> str:
    if point is None:
        return "-"
    if point.get("skipped"):
        return "not run (shorter did not fit)"
    if point.get("over_memory_cap") is not None:
        return f"over the cap ({point['over_memory_cap'] / GB:.2f}+)"
    if point.get("out_of_memory"):
        return "out of memory"
    return value(point) if point.get("ok") else "failed"


def longest_text(found: dict | None) -> str:
    if not found:
        return "-"
    lo, hi = found["longest"], found["shortest_not_fitting"]
    if hi is None:
        return f">= {lo:,}" if lo else "?"
    return f"{lo:,} ({hi:,} does not fit)" if lo else f"< {hi:,} (none fits)"


def markdown(report: dict, png_name: str) -> str:
    cuda, cap = report["settings"]["device"] == "cuda", report["cap_bytes"]
    lengths = report["settings"]["lengths"]
    names = [n for n in report["settings"]["frameworks_run"] if n in report["points"]]
    model = report["model"]
    kind = "CUDA max allocated" if cuda else "peak RSS"
    head = " | ".join(f"{n:,}" for n in lengths)
    lines = [
        "## Peak memory and tokens/s against pair length (benchmarks/memory_vs_length.py)",
        "",
        f"command: `{report['command']}`",
        "",
        f"machine: {report['machine']['cpu']}, {report['machine']['cpus_usable']} usable CPUs, "
        + (f"GPU {report['machine'].get('gpu')}, " if cuda else "")
        + f"{report['machine'].get('ram_gb', '?')} GB RAM; "
        + ", ".join(f"{k} {v}" for k, v in report["machine"]["versions"].items()),
        "",
        f"Llama, hidden {model['hidden_size']}, {model['num_hidden_layers']} layers, vocabulary {model['vocab']:,}, "
        f"{model['dtype']}; batch {report['settings']['batch']} pairs; pair length L = words of prompt + response "
        f"(prompt L/2, each response L/2; sequences L + 2 tokens); {report['settings']['warmup']} warm-up + "
        f"{report['settings']['steps']} measured steps per worker; activation checkpointing "
        f"{'on' if report['settings'].get('gradient_checkpointing') else 'off'} for every framework; "
        f"the cap {cap / GB:.3g} GiB of {kind}.",
        *[f"{name}: not run ({why})" for name, why in report["settings"]["not_run"].items()],
        "",
        f"### {kind} (GiB) by pair length (words), the fit peak = a + b*L + c*L^2, the longest L that fits",
        "",
        f"| framework | {head} | a GiB | b MiB per 1,024 words | c MiB per (1,024 words)^2 | max residual GiB "
        f"| longest L fitting {cap / GB:.3g} GiB | bisection |",
        "|---|" + "---|" * (len(lengths) + 6),
    ]
    for name in names:
        points, fit, found = report["points"][name], report["fits"].get(name), report["longest"].get(name)
        cells = [cell(points.get(str(n)), lambda p: f"{p['peak_bytes'] / GB:.2f}") for n in lengths]
        terms = ([f"{fit['a_gib']:.3f}", f"{fit['b_mib_per_1024_words']:.1f}", f"{fit['c_mib_per_1024_words2']:.2f}",
                  f"{fit['max_residual_bytes'] / GB:.3f}"] if fit else ["-"] * 4)  # fmt: skip
        probes = ", ".join(f"{n:,} {'fits' if ok else 'no' if ok is False else 'failed'}" for n, ok in
                           (found or {}).get("probes", []))  # fmt: skip
        how = f"{probes or 'no probes'}; stopped: {found['stopped']}" if found else "-"
        lines.append(f"| {name} | " + " | ".join(cells + terms) + f" | {longest_text(found)} | {how} |")
    lines += ["", "### tokens/s by pair length (words)", "", f"| framework | {head} |", "|---|" + "---|" * len(lengths)]
    for name in names:
        cells = [cell(report["points"][name].get(str(n)), lambda p: f"{p['tokens_per_s']:,.0f}") for n in lengths]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "### Issue 35's goals (set for a CPU, vocabulary 32k, batch 8)", ""]
    lines += [f"- {g['goal']}: {g['value']}: **{verdict(g)}**" for g in report["goals"]]
    lines += ["", f"![peak against pair length]({png_name})", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """Peak against length per framework (sweep: filled, probes: open; one that did not fit: x at the cap), its
    fitted curve (dashed) and the cap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cap = report["cap_bytes"] / GB
    measured = [int(n) for points in report["points"].values() for n in points] or [STEP_WORDS]
    fig, ax = plt.subplots(figsize=(8, 5))
    for index, (name, points) in enumerate(report["points"].items()):
        color = f"C{index}"
        ran = sorted((p for p in points.values() if p.get("ok")), key=lambda p: p["length"])
        for kind, marker in (("sweep", "o"), ("probe", "s")):
            xs = [p["length"] for p in ran if p["kind"] == kind]
            ys = [p["peak_bytes"] / GB for p in ran if p["kind"] == kind]
            ax.plot(xs, ys, marker, color=color, mfc=color if kind == "sweep" else "none",
                    label=name if kind == "sweep" else None)  # fmt: skip
        over = [p["length"] for p in points.values() if p.get("fits") is False and not p.get("skipped")]
        over = [n for n in over if not any(p["length"] == n and p.get("ok") for p in ran)]
        ax.plot(over, [cap] * len(over), "x", color=color, ms=9)
        fit = report["fits"].get(name)
        if fit:
            first, last = min(measured) / 2, max(measured) * 1.5  # a smooth curve: 8 points per doubling
            xs = [first * 2 ** (k / 8) for k in range(int(8 * math.log2(last / first)) + 1)]
            ax.plot(xs, [predict(fit, x) / GB for x in xs], "--", color=color, lw=1)
    ax.axhline(cap, color="red", lw=1, ls=":", label=f"cap {cap:.3g} GiB")
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(measured) / 1.5, max(measured) * 1.5)  # also where no point ran (a log axis has no default)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("pair length (words of prompt + response)")
    ax.set_ylabel(f"peak {'CUDA max allocated' if report['settings']['device'] == 'cuda' else 'RSS'} (GiB)")
    ax.set_title("peak memory against pair length (x: does not fit; dashed: a + bL + cL^2)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the run ---------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    import torch

    a, bench = parse_args(argv)
    if bench.device == "auto":
        bench.device = "cuda" if torch.cuda.is_available() else "cpu"
    if bench.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    cuda = bench.device == "cuda"
    a.lengths = sorted(set(a.lengths or LENGTHS[bench.device]))
    out = a.out or REPO_ROOT / "benchmarks" / "results" / f"memory_vs_length-{bench.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = (a.workdir or Path(tempfile.mkdtemp(prefix="memory_vs_length_"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    liger_ok, liger_text = liger_status()
    bench.with_liger = liger_ok
    frameworks, dropped = preference_step.runnable_frameworks(bench.frameworks, liger_ok, cuda)
    machine = machine_info(cuda)
    probe = probe_device(bench, workdir) if cuda else {}  # the GPU's name and memory (MFU is not reported here)
    machine |= {k: probe[k] for k in ("gpu", "gpu_memory_gb") if k in probe}
    cap_gib = a.cap_gib if a.cap_gib is not None else (machine["gpu_memory_gb"] if cuda else CPU_CAP_GIB)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["memory_vs_length.py", *argv])
    report: dict = {
        "command": command,
        "machine": machine,
        "liger": liger_text,
        "cap_bytes": cap_gib * GB,
        "settings": {
            "device": bench.device,
            "lengths": a.lengths,
            "frameworks_run": frameworks,
            "not_run": dropped,
            "batch": bench.batch,
            "steps": bench.steps,
            "warmup": bench.warmup,
            "goal_length": a.goal_length,
            "max_probes": a.max_probes,
            "tolerance": a.tolerance,
            "gradient_checkpointing": bool(bench.gradient_checkpointing),
            "worker": {k: getattr(bench, k) for k in WORKER_SETTINGS},
        },
        "points": {},
        "fits": {},
        "longest": {},
    }
    print(f"command: {command}\nmachine: {machine['cpu']}" + (f", GPU {machine['gpu']}" if cuda else "")
          + f"\ncap: {cap_gib:.3g} GiB of {'CUDA memory' if cuda else 'RSS'}\nwork folder: {workdir}")  # fmt: skip
    for name, why in dropped.items():
        print(f"{name}: not run ({why})")

    def save() -> None:
        out.write_text(json.dumps(report, indent=1, default=str))

    try:
        model_dir = workdir / f"model-v{a.vocab}"
        model_dir.mkdir(parents=True, exist_ok=True)
        preference_step.build_tokenizer(a.vocab, model_dir)
        longest = max(a.max_probe_length or 0, 2 * max(a.lengths))
        shape = preference_step.model_shape(bench)
        report["model"] = preference_step.build_model(a.vocab, model_dir, bench.seed, longest, cuda, shape)
        peak_flops = probe.get("peak_matmul", {}).get("flops_per_s", math.nan)
        runner = Runner(a, bench, report, workdir, model_dir, peak_flops, save)
        sweep(runner, frameworks, a.lengths)
        analyse(runner, frameworks, a)
        report["goals"] = goals(report)
        plot(report, out.with_suffix(".png"))
        report["markdown"] = markdown(report, out.with_suffix(".png").name)
        out.with_suffix(".md").write_text(report["markdown"])
        print("\n" + report["markdown"])
        for goal in report["goals"]:
            print(f"goal: {goal['goal']}: {goal['value']}: {verdict(goal)}")
    finally:
        save()
        print(f"results: {out} (and {out.with_suffix('.md').name}, {out.with_suffix('.png').name})")
        if a.keep_workdir or a.workdir:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
