"""Where a training step's time goes: ``torch.profiler`` around two steps of a Trainer-based worker, and the
chrome trace it writes cut into categories (``benchmarks/gpu_profile.py`` runs it and prints the tables).

Each unit of time is attributed once. On a GPU the units are the device's kernels, copies and memsets, each
attributed through the CPU operator that launched it (the trace's "External id") and that operator's enclosing
operators on its thread; the GPU's idle time within the profiled steps is "CPU-side gaps". On a CPU the units are
each operator's self time (its duration less its children's); time inside a step but inside no operator is
"CPU-side gaps" (Python, the data loader, the Trainer's bookkeeping).

Categories, the first rule that matches (names matched on the launching operator and its enclosing ones):

* copies: device memcpy / memset, ``aten::copy_`` and other pure data movement (``_to_copy``, ``cat``, ``clone``);
* optimizer: under ``Optimizer.step`` / ``zero_grad``, ``_foreach_*`` operators (AdamW, gradient clipping);
* attention: scaled-dot-product / flash / efficient attention operators and kernels (forward and backward);
* LM head / log-probs: any operator with an input of the vocabulary's size (the head's matmuls, the log-softmax
  or logsumexp over the vocabulary), and amapo's ``ChunkedTokenLogps`` and Liger's fused linear functions;
* layer matmuls: the remaining ``mm`` / ``addmm`` / ``bmm`` / ``linear`` (the decoder's projections);
* elementwise: everything else (norms, activations, RoPE, residual adds, the loss's own arithmetic).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

ACTIVE_STEPS = 2
CATEGORIES = (
    "attention",
    "layer matmuls",
    "LM head / log-probs",
    "elementwise (norms, activations, RoPE)",
    "optimizer",
    "copies",
)
GAPS = "CPU-side gaps"
ATTENTION = re.compile(r"scaled_dot_product|flash|fmha|efficient_attention|cudnn_attention|sdpa|attention", re.I)
LM_HEAD = re.compile(r"ChunkedTokenLogps|LigerFusedLinear|fused_linear|log_softmax|logsumexp|cross_entropy|nll_loss",
                     re.I)  # fmt: skip
OPTIMIZER = re.compile(r"Optimizer\.(step|zero_grad)|aten::_foreach_|clip_grad", re.I)
COPIES = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous", "aten::cat",
          "aten::index_select", "aten::fill_", "aten::zero_"}  # fmt: skip
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm", "aten::_scaled_mm"}
DEVICE_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}


def make_profiler_callback(trace_path: str, total_steps: int, cuda: bool):
    """A TrainerCallback profiling the last ``ACTIVE_STEPS`` steps (the one before them as the profiler's warm-up)
    with shapes recorded, then writing the chrome trace to ``trace_path``."""
    from torch.profiler import ProfilerActivity, profile, schedule
    from transformers import TrainerCallback

    if total_steps < ACTIVE_STEPS + 1:
        raise ValueError(f"profiling needs at least {ACTIVE_STEPS + 1} steps, got {total_steps}")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    plan = schedule(wait=total_steps - ACTIVE_STEPS - 1, warmup=1, active=ACTIVE_STEPS, repeat=1)

    class ProfileSteps(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.profiler = profile(activities=activities, schedule=plan, record_shapes=True,
                                    on_trace_ready=lambda p: p.export_chrome_trace(trace_path))  # fmt: skip
            self.profiler.start()

        def on_step_end(self, args, state, control, **kwargs):
            self.profiler.step()

        def on_train_end(self, args, state, control, **kwargs):
            self.profiler.stop()

    return ProfileSteps()


def analyze_trace(path: str | Path, vocab: int) -> dict:
    """Time per category per profiled step (ms), the share of the step's wall time, and the top 15 units."""
    events = [e for e in json.loads(Path(path).read_text())["traceEvents"] if e.get("ph") == "X"]
    steps = [e for e in events if e.get("name", "").startswith("ProfilerStep#")]
    if not steps:
        raise ValueError(f"{path}: no ProfilerStep events (was the profiler stepped?)")
    host = [e for e in events if e.get("cat") in ("cpu_op", "user_annotation") and e not in steps]
    device = [e for e in events if e.get("cat") in DEVICE_CATEGORIES]
    parents = enclosing_events(host)
    by_id = {e["args"]["External id"]: e for e in host if "External id" in e.get("args", {})}

    totals: dict[str, float] = defaultdict(float)
    units: dict[tuple[str, str], dict] = {}

    def attribute(event: dict, category: str, us: float) -> None:
        totals[category] += us
        unit = units.setdefault((event["name"], category), {"name": event["name"], "category": category,
                                                            "count": 0, "us": 0})  # fmt: skip
        unit["count"] += 1
        unit["us"] += us

    start = min(s["ts"] for s in steps)
    if device:
        for event in device:
            op = by_id.get(event.get("args", {}).get("External id"))
            attribute(event, categorize(chain_of(op, parents) if op else [], vocab, event), event["dur"])
        end = max(max(s["ts"] + s["dur"] for s in steps), max(e["ts"] + e["dur"] for e in device))
        busy = union_length([(e["ts"], e["ts"] + e["dur"]) for e in device])
        totals[GAPS] = max(0.0, (end - start) - busy)
        unit_kind = "kernel"
    else:
        children = defaultdict(float)
        for event in host:
            parent = parents.get(id(event))
            if parent is not None:
                children[id(parent)] += event["dur"]
        for event in host:
            self_time = max(0.0, event["dur"] - children[id(event)])
            attribute(event, categorize(chain_of(event, parents), vocab, None), self_time)
        end = max(s["ts"] + s["dur"] for s in steps)
        inside = union_length([(e["ts"], e["ts"] + e["dur"]) for e in host if parents.get(id(e)) is None])
        totals[GAPS] = max(0.0, (end - start) - inside)
        unit_kind = "operator (self time)"
    wall_ms = (end - start) / 1000 / len(steps)
    per_step = {name: totals.get(name, 0.0) / 1000 / len(steps) for name in (*CATEGORIES, GAPS)}
    top = sorted(units.values(), key=lambda u: -u["us"])[:15]
    return {
        "steps": len(steps),
        "wall_ms_per_step": wall_ms,
        "ms_per_step": per_step,
        "share": {name: ms / wall_ms if wall_ms else 0.0 for name, ms in per_step.items()},
        "unit_kind": unit_kind,
        "top": [{**u, "ms_per_step": u["us"] / 1000 / len(steps)} for u in top],
    }


def enclosing_events(host: list[dict]) -> dict[int, dict]:
    """id(event) -> the innermost host event on the same thread whose interval contains it."""
    parents: dict[int, dict] = {}
    threads = defaultdict(list)
    for event in host:
        threads[(event.get("pid"), event.get("tid"))].append(event)
    for events in threads.values():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[dict] = []
        for event in events:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] < event["ts"] + event["dur"]:
                stack.pop()
            if stack:
                parents[id(event)] = stack[-1]
            stack.append(event)
    return parents


def chain_of(event: dict | None, parents: dict[int, dict]) -> list[dict]:
    chain = []
    while event is not None:
        chain.append(event)
        event = parents.get(id(event))
    return chain


def has_dim(event: dict, size: int) -> bool:
    dims = event.get("args", {}).get("Input Dims") or []
    return any(size in d for d in dims if isinstance(d, list))


def categorize(chain: list[dict], vocab: int, device_event: dict | None) -> str:
    """The category of one unit of time (the module docstring's rules, in order)."""
    kernel = device_event.get("name", "") if device_event else ""
    names = [e.get("name", "") for e in chain]
    innermost = names[0] if names else ""
    device_copy = bool(device_event) and device_event.get("cat") in ("gpu_memcpy", "gpu_memset")
    if device_copy or re.search(r"memcpy|memset", kernel, re.I):
        return "copies"
    if any(OPTIMIZER.search(n) for n in names) or re.search(r"adam|multi_tensor_apply", kernel, re.I):
        return "optimizer"
    if any(ATTENTION.search(n) for n in names) or ATTENTION.search(kernel):
        return "attention"
    if any(has_dim(e, vocab) for e in chain) or any(LM_HEAD.search(n) for n in names):
        return "LM head / log-probs"
    if innermost in COPIES:
        return "copies"
    if any(n in MATMULS for n in names[:3]) or re.search(r"gemm|cutlass|xmma|cublas", kernel, re.I):  # innermost first
        return "layer matmuls"
    return "elementwise (norms, activations, RoPE)"


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def markdown(name: str, result: dict) -> str:
    """One framework's profile: the categories table, then the top 15 kernels (or operators)."""
    lines = [
        f"### {name}: {result['steps']} profiled steps, {result['wall_ms_per_step']:.1f} ms per step",
        "",
        "| where the time goes | ms per step | share of the step |",
        "|---|---|---|",
    ]
    for category, ms in result["ms_per_step"].items():
        lines.append(f"| {category} | {ms:.1f} | {100 * result['share'][category]:.1f}% |")
    lines += ["", f"Top {len(result['top'])} by time ({result['unit_kind']}):", "",
              "| # | name | category | calls per step | ms per step |", "|---|---|---|---|---|"]  # fmt: skip
    for i, unit in enumerate(result["top"], 1):
        label = unit["name"] if len(unit["name"]) <= 90 else unit["name"][:87] + "..."
        calls = unit["count"] / result["steps"]
        lines.append(
            f"| {i} | `{label.replace('|', '/')}` | {unit['category']} | {calls:g} | {unit['ms_per_step']:.2f} |"
        )
    return "\n".join(lines)
