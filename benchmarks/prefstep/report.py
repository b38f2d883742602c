"""Per-framework summaries of the workers' raw numbers (medians over measured steps, peaks over rounds, MFU) and
the markdown tables and notes the run prints.
"""

from __future__ import annotations

import math
import statistics

from .common import BASELINE, GB, REFERENCE_BASED, base_framework
from .data import model_flops

FIRST_STEP_LIMIT = 1.1  # a first step that needs more than this times the steady peak is flagged (issue 24)


def summarize(framework: str, runs: list[dict], steps: list[dict], data_info: dict, peak: float) -> dict:
    """Medians over every measured step of every successful round, peaks over rounds, and the checks."""
    ok = [r for r in runs if r.get("ok")]
    summary: dict = {"framework": framework, "rounds_ok": len(ok), "rounds": len(runs)}
    errors = [r.get("error", "?") for r in runs if not r.get("ok")]
    if errors:
        summary["errors"] = errors
    if any(is_out_of_memory(r) for r in runs):
        summary["out_of_memory"] = True
    if not ok:
        summary["failed"] = True
        summary["not_run"] = all(r.get("skipped") for r in runs)
        return summary
    if all(r.get("setup_only") for r in ok):  # --rehearse: its set-up ran, no step was meant to (setup_only.py)
        summary["setup_only"] = True
        summary["notes"] = sorted({n for r in ok for n in r.get("notes", [])})
        summary["first_batch"] = next((r["first_batch"] for r in ok if r.get("first_batch")), None)
        return summary
    model = data_info["model"]
    shape = {"n_nonembedding": model["params_nonembedding"], "hidden": model["hidden_size"],  # model_flops's
             "vocab": model["vocab"], "layers": model["num_hidden_layers"],
             "reference": base_framework(framework) in REFERENCE_BASED}  # fmt: skip
    tokens_per_s, step_times, mfu, warnings, seen_batches, per_round = [], [], [], [], [], []
    for run in ok:
        round_rates = []
        observed = run.get("batches") or []
        for step, seconds in zip(run.get("measured_steps", []), run.get("step_times", []), strict=False):
            seen = observed[step - 1] if step - 1 < len(observed) else None
            if seen is not None:
                seen_batches.append(seen)
            counted, differences = credited_counts(step, steps[step - 1], seen)
            warnings += differences
            rate = counted["tokens"] / seconds
            tokens_per_s.append(rate)
            round_rates.append(rate)
            step_times.append(seconds)
            mfu.append(model_flops(counted, **shape) / seconds / peak)
        if round_rates:
            per_round.append(statistics.median(round_rates))
        if not observed or all(b is None for b in observed):
            warnings.append("could not observe the collated batches: token counts are from the data order only")
    if not step_times:
        summary["failed"] = True
        summary.setdefault("errors", []).append("no measured steps")
        return summary
    losses = [r.get("losses", {}).get("1") for r in ok]
    losses = [x for x in losses if x is not None]
    summary.update(
        tokens_per_s=statistics.median(tokens_per_s),
        tokens_per_s_per_round=per_round,
        step_time_s=statistics.median(step_times),
        mfu=statistics.median(mfu),
        measured_steps=len(step_times),
        peak_rss=max(r["peak_rss"] for r in ok),
        rss_increase=max(r["peak_rss"] - (r.get("rss_before_train") or r["peak_rss"]) for r in ok),
        step1_loss=losses[0] if losses else None,
        step1_loss_spread=(max(losses) - min(losses)) if losses else None,
        warnings=sorted(set(warnings)),
    )
    cuda_peaks = [r["cuda_max_allocated"] for r in ok if r.get("cuda_max_allocated") is not None]
    if cuda_peaks:
        summary["cuda_max_allocated"] = max(cuda_peaks)
    summary["memory"] = phase_peaks(ok)
    for kind, peaks in summary["memory"].items():
        ratio = peaks.get("first_over_steady")
        if ratio is not None and ratio > FIRST_STEP_LIMIT:
            summary["warnings"].append(
                f"the first step needs {ratio:.2f}x the steady {kind} peak ({peaks['first_step'] / GB:.2f} vs "
                f"{peaks['steady'] / GB:.2f} GiB; more than {FIRST_STEP_LIMIT}x): something before or in step 1 "
                "costs memory the training step does not"
            )
    if seen_batches:
        logical = sum(b["tokens"] for b in seen_batches)
        summary["observed"] = {
            "layouts": sorted({b.get("layout", "?") for b in seen_batches}),
            "processed_over_logical_tokens": sum(b["processed_tokens"] for b in seen_batches) / logical,
            "input_positions_over_logical_tokens": sum(b["padded_tokens"] for b in seen_batches) / logical,
        }
    settings = next((r["settings"] for r in ok if r.get("settings")), None)
    if settings:
        summary["settings"] = settings
    return summary


def credited_counts(step: int, expected: dict, seen: dict | None) -> tuple[dict, list[str]]:
    """The counts a measured step is credited with: the data order's (``expected``), or, where the collated batch
    (``seen``) held other token counts (a different batch, or truncation), the batch's; and a warning for each
    count that differs."""
    seen = seen or {}
    keys = [key for key in ("tokens", "response_tokens") if key in seen and seen[key] != expected[key]]
    if not keys:
        return expected, []
    warnings = [f"step {step}: the collated batch held {seen[key]} {key.replace('_', ' ')}, the data order says "
                f"{expected[key]} (a different batch, or truncation): counted what the batch held"
                for key in keys]  # fmt: skip
    counted = {**expected, **{k: seen.get(k, expected[k]) for k in ("tokens", "response_tokens", "sum_len_sq")}}
    return counted, warnings


def phase_peaks(runs: list[dict]) -> dict[str, dict]:
    """Per memory kind (``rss``, and ``cuda`` on a GPU): the largest first-step and steady peak over rounds, and
    their ratio (``MemoryPhases`` in measure.py)."""
    out = {}
    for kind, key in (("rss", "peak_rss"), ("cuda", "cuda_max_allocated")):
        peaks = {}
        for phase in ("setup", "first_step", "steady"):
            values = [r.get("memory_phases", {}).get(phase, {}).get(key) for r in runs]
            values = [v for v in values if v is not None]
            if values:
                peaks[phase] = max(values)
        if "first_step" in peaks and peaks.get("steady"):
            peaks["first_over_steady"] = peaks["first_step"] / peaks["steady"]
        if peaks:
            out[kind] = peaks
    return out


def phases_text(run: dict) -> str:
    """The "first step X GiB, steady Y GiB, " part of a worker's progress line (CUDA on a GPU, else RSS)."""
    phases = run.get("memory_phases") or {}
    key = "cuda_max_allocated" if any("cuda_max_allocated" in p for p in phases.values()) else "peak_rss"
    parts = [f"{name.replace('_', ' ')} {phases[name][key] / GB:.2f} GiB" for name in ("first_step", "steady")
             if phases.get(name, {}).get(key)]  # fmt: skip
    return ", ".join(parts) + ", " if parts else ""


def fused_head_lines(summaries: dict[str, dict]) -> list[str]:
    """TRL DPO's fused LM head (``frameworks.watch_fused_lm_head``): patched in, asked for, and on which kernel."""
    lines = []
    for name, s in summaries.items():
        head = s.get("settings", {}).get("fused_lm_head")
        if head:
            active = head.get("patched") and head.get("calls_with_fused_lm_head", 0) > 0
            kernel = {True: "TRL's Triton kernel", False: "TRL's torch fallback (no Triton here)"}.get(
                head.get("triton"), "kernel unknown"
            )
            lines.append(
                f"{name}: fused LM head (TRL add_fused_lm_head) {'ACTIVE' if active else 'NOT ACTIVE'}: forward "
                f"patched {head.get('patched')}, {head.get('calls_with_fused_lm_head')} policy forwards with "
                f"fused_lm_head=True, {kernel}"
            )
    return lines


def layout_lines(summaries: dict[str, dict]) -> list[str]:
    lines = []
    for name, s in summaries.items():
        seen = s.get("observed")
        options = {k: v for k, v in s.get("settings", {}).items() if k in ("batch_layout", "lm_head_chunk_size")}
        if seen:
            asked = f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""
            lines.append(
                f"{name}: batch layout {'/'.join(seen['layouts'])}{asked}; tokens fed to the model (no padding) "
                f"{100 * seen['processed_over_logical_tokens']:.0f}% of the logical tokens, input positions "
                f"(padding included) {100 * seen['input_positions_over_logical_tokens']:.0f}%"
            )
    return lines


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def first_and_steady(peaks: dict | None) -> tuple[str, str]:
    """Cells "first / steady GiB" and their ratio, flagged when the first step needs more than FIRST_STEP_LIMIT."""
    if not peaks or "first_step" not in peaks:
        return "-", "-"
    steady = fmt(peaks.get("steady") and peaks["steady"] / GB, ".2f")
    ratio = peaks.get("first_over_steady")
    flag = "" if ratio is None or ratio <= FIRST_STEP_LIMIT else " **over 1.1x**"
    return f"{peaks['first_step'] / GB:.2f} / {steady}", fmt(ratio, ".2f", "n/a") + ("x" if ratio else "") + flag


def vocab_table(vocab: int, summaries: dict[str, dict], cuda: bool) -> str:
    """One row per framework. Memory: the worker's own peak RSS (and CUDA peak), the first-step and steady peaks
    (CUDA on a GPU, RSS on a CPU), and the ratio vs TRL of the whole worker's peak (CUDA on a GPU, RSS on a CPU)."""
    base = summaries.get(BASELINE, {})
    base_ok = base and not base.get("failed")
    kind = "cuda" if cuda else "rss"
    label = "CUDA" if cuda else "RSS"
    header = ["framework", "tokens/s", "per round", "step time s", "peak RSS GiB"]
    if cuda:
        header.append("CUDA max alloc GiB")
    header += [f"{label} first step / steady GiB", "first / steady", "MFU %", "step-1 loss",
               f"tokens/s vs {BASELINE}", f"peak {label} vs {BASELINE}"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in summaries.items():
        if s.get("failed") or s.get("setup_only"):  # one cell says why, the others are empty
            cells = [name, unmeasured_text(s)] + [""] * (len(header) - 2)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = [
            name,
            fmt(s["tokens_per_s"], ",.0f"),
            " / ".join(format(x, ",.0f") for x in s.get("tokens_per_s_per_round", [])) or "-",
            fmt(s["step_time_s"], ".3f"),
            fmt(s["peak_rss"] / GB, ".2f"),
        ]
        if cuda:
            cells.append(fmt(s.get("cuda_max_allocated", 0) / GB, ".2f"))
        peaks = s.get("memory", {}).get(kind)
        cells += [*first_and_steady(peaks), fmt(100 * s["mfu"], ".2f"), fmt(s["step1_loss"], ".6f")]
        if base_ok:
            key = "cuda_max_allocated" if cuda else "peak_rss"
            ours, theirs = s.get(key), base.get(key)
            cells += [
                fmt(s["tokens_per_s"] / base["tokens_per_s"], ".2f") + "x",
                (fmt(ours / theirs, ".2f") + "x") if ours and theirs else "n/a",
            ]
        else:
            cells += ["n/a", "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def unmeasured_text(summary: dict) -> str:
    """The table cell of a framework that has no measured step: set-up only, not run, or failed and why."""
    if not summary.get("failed"):
        return "set-up ok (set-up only: cannot run here)"
    if summary.get("not_run"):
        return "not run"
    return "FAILED: " + "; ".join(summary.get("errors", ["failed"]))[:160].replace("|", "/").replace("\n", " ")


def loss_comparisons(summaries: dict[str, dict]) -> list[str]:
    lines = []
    for a_name, b_name in (
        ("amapo-simpo", "trl-cpo-simpo"),
        ("liger-simpo", "trl-cpo-simpo"),
        ("amapo-dpo", "trl-dpo"),
    ):
        a_loss = summaries.get(a_name, {}).get("step1_loss")
        b_loss = summaries.get(b_name, {}).get("step1_loss")
        if a_loss is not None and b_loss is not None:
            lines.append(f"step-1 loss {a_name} - {b_name}: {a_loss - b_loss:+.3e} ({a_loss:.8f} vs {b_loss:.8f})")
    for name, s in summaries.items():  # an option must not change the numbers: its step-1 loss against amapo's own
        base = base_framework(name)
        if "+" in name and s.get("step1_loss") is not None:
            base_loss = summaries.get(base, {}).get("step1_loss")
            if base_loss is not None:
                lines.append(f"step-1 loss {name} - {base}: {s['step1_loss'] - base_loss:+.3e}")
    for name in ("amapo-dpo", "trl-dpo"):
        loss = summaries.get(name, {}).get("step1_loss")
        if loss is not None:
            lines.append(f"step-1 loss {name} - ln 2 (policy == reference): {loss - math.log(2):+.3e}")
    for name, s in summaries.items():
        spread = s.get("step1_loss_spread")
        if spread:
            lines.append(f"note: {name}'s step-1 loss differs between rounds by {spread:.3e}")
    return lines


def losscheck_lines(check: dict | None) -> list[str]:
    if not check:
        return []
    if not check.get("ok"):
        return [f"loss check: FAILED: {check.get('error')}"]
    data = check.get("losscheck", {})
    lines = [f"loss check (SimPO, first {data.get('pairs')} pairs, before any update):"]
    diffs = data.get("diff_vs_trl_compute_loss", {})
    for name, value in data.get("values", {}).items():
        diff = diffs.get(name)
        suffix = f"   diff vs TRL compute_loss {diff:+.3e}" if diff is not None else ""
        lines.append(f"  {name:34s} {value:.8f}{suffix}")
    for name, error in data.get("errors", {}).items():
        lines.append(f"  {name}: FAILED: {error}")
    batches = {k: check.get(k) for k in ("trl_first_batch", "amapo_first_batch", "liger_first_batch") if check.get(k)}
    tokens = {k: b.get("tokens") for k, b in batches.items()}
    if len(set(tokens.values())) > 1:
        lines.append(f"  warning: the first batches differ in non-pad tokens: {tokens}")
    return lines


def case_section(a, key: str, case: dict, peak: dict, cuda: bool) -> str:
    """The markdown of one case (vocabulary and length): what ran, the table, then the loss comparisons, the loss
    check, the batch layouts and every warning, error and note (each once, in order)."""
    data_info, summaries = case["data"], case["summary"]
    rounds = sorted({s["rounds"] for s in summaries.values()})
    lines = [
        f"### {key}",
        "",
        f"{data_info['pairs']} pairs, batch {a.batch}, {case['min_len']}-{case['max_len']} words per prompt+response "
        f"(mean {data_info['mean_pair_tokens']:.0f} tokens per pair), {a.warmup} warm-up + {a.steps} measured "
        f"steps x {'/'.join(map(str, rounds))} rounds; {data_info['model']['dtype']}; medians over measured steps; "
        f"peaks: max over rounds; MFU vs the measured {peak['gflops_per_s']:.1f} GFLOP/s",
        "",
        vocab_table(case["vocab"], summaries, cuda),
        "",
    ]
    notes = (loss_comparisons(summaries) + losscheck_lines(case.get("losscheck")) + fused_head_lines(summaries)
             + layout_lines(summaries))  # fmt: skip
    for name, s in summaries.items():
        notes += [f"warning: {name}: {w}" for w in s.get("warnings", [])]
        notes += [f"error: {name}: {e}" for e in s.get("errors", [])]
        for run in case["runs"][name]:
            notes += [f"note: {name}: {n}" for n in run.get("notes", [])]
    lines += sorted(set(notes), key=notes.index)
    return "\n".join(lines)


def progress_text(result: dict) -> str:
    """The end of a worker's progress line: its median step, peaks and wall time, or why it failed."""
    if result.get("ok") and result.get("setup_only"):
        return f"set-up ok (set-up only: cannot run here; {result['process_wall_s']:.0f} s)"
    if result.get("ok"):
        times = result.get("step_times") or [float("nan")]
        return (f"ok (median step {statistics.median(times):.3f} s, peak RSS {result['peak_rss'] / GB:.2f} GiB, "
                f"{phases_text(result)}{result['process_wall_s']:.0f} s)")  # fmt: skip
    return result.get("error", "FAILED") if result.get("skipped") else f"FAILED: {result.get('error')}"


OUT_OF_MEMORY_MARKS = ("OutOfMemoryError", "out of memory", "killed by signal 9")


def is_out_of_memory(run: dict) -> bool:
    text = f"{run.get('error', '')} {run.get('stderr_tail', '')}"
    return not run.get("ok") and any(mark in text for mark in OUT_OF_MEMORY_MARKS)


def headroom_section(cases: dict[str, dict], machine: dict, cuda: bool) -> str:
    """The longest pair length each framework trains at this batch before running out of memory: measured where a
    length ran out of memory, extrapolated (linear in max words per prompt + response) from the two longest lengths
    that ran, against the device's memory (GPU) or RAM (CPU). Empty when the run has a single length."""
    if len({(c["min_len"], c["max_len"]) for c in cases.values()}) < 2:
        return ""
    capacity = (machine.get("gpu_memory_gb") if cuda else machine.get("ram_gb")) or 0
    capacity_bytes = capacity * GB  # both are recorded in GiB
    key = "cuda_max_allocated" if cuda else "peak_rss"
    names = list(dict.fromkeys(name for c in cases.values() for name in c["summary"]))
    lines = [
        f"### Memory headroom: the longest pair trained at this batch ({capacity:g} GiB of "
        f"{'GPU memory' if cuda else 'RAM'})",
        "",
        "| framework | " + " | ".join(f"{c['min_len']}-{c['max_len']} words" for c in cases.values())
        + " | longest pair length (max words) | how |",
        "|---|" + "---|" * (len(cases) + 2),
    ]  # fmt: skip
    for name in names:
        cells, points, first_oom = [], [], None
        for c in cases.values():
            s = c["summary"].get(name)
            if s is None or (s.get("failed") and s.get("not_run")):
                cells.append("not run")
            elif s.get("setup_only"):
                cells.append("set-up only")
            elif s.get("failed"):
                oom = s.get("out_of_memory")
                cells.append("out of memory" if oom else "failed")
                if oom and first_oom is None:
                    first_oom = c
            else:
                peak = s.get(key)
                cells.append(f"{peak / GB:.1f} GiB" if peak else "?")
                if peak:
                    points.append((c["max_len"], peak))
        longest, how = headroom_estimate(points, first_oom, capacity_bytes)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {longest} | {how} |")
    return "\n".join(lines)


def headroom_estimate(points: list[tuple[int, int]], first_oom: dict | None, capacity: float) -> tuple[str, str]:
    """(longest length, how it was found) from (max_len, peak bytes) points that trained and the first length
    that ran out of memory (if any)."""
    points = sorted(points)
    if first_oom is not None:
        below = [length for length, _ in points if length < first_oom["max_len"]]
        if not below:
            return f"< {first_oom['max_len']:,}", "measured: out of memory at every length run"
        return (f"{max(below):,} to {first_oom['max_len']:,}",
                f"measured: trains {max(below):,}, out of memory at {first_oom['max_len']:,}")  # fmt: skip
    if len(points) < 2:
        return (f">= {points[-1][0]:,}", "one length ran: no extrapolation") if points else ("?", "nothing ran")
    (x1, y1), (x2, y2) = points[-2], points[-1]
    slope = (y2 - y1) / (x2 - x1) if x2 != x1 else 0
    if slope <= 0:
        return f">= {x2:,}", "memory did not grow with length: no extrapolation"
    longest = x2 + (capacity - y2) / slope
    return f"~{longest:,.0f}", f"extrapolated linearly from {x1:,} and {x2:,} words ({y1 / GB:.1f}, {y2 / GB:.1f} GiB)"


def report_header(command: str, machine: dict, liger_line: str, peak: dict, cuda: bool) -> list[str]:
    """The lines above the tables in the ``.md`` output: the command, the machine, the versions, the peak."""
    return [
        "## preference step benchmark",
        "",
        f"command: `{command}`",
        "",
        f"machine: {machine['cpu']}, {machine['cpus_usable']} usable CPUs, "
        + (f"GPU {machine['gpu']}, " if cuda else "")
        + f"{machine.get('ram_gb', '?')} GB RAM, torch threads {machine['torch_threads']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
        liger_line,
        f"peak matmul: {peak['gflops_per_s']:.1f} GFLOP/s ({peak['what']})",
        "",
    ]
