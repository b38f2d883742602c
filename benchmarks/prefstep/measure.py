"""How a worker measures: step times, the batches its collator really made, RSS; and, in the parent, the peak
matmul throughput MFU is measured against and the machine's description.

The rules are in the docstring of ``benchmarks/preference_step.py``, section "What is measured".
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

from .common import GB, version_of

PACKAGES = ("torch", "transformers", "trl", "accelerate", "datasets", "tokenizers", "liger-kernel", "amapo")  # versions
MASKS = ("attention_mask", "chosen_attention_mask", "rejected_attention_mask")  # the padded layouts' masks


def make_step_timer(warmup: int, cuda: bool):
    """A TrainerCallback timing optimizer steps, recording logged losses, RSS before training, batch contents, and
    the memory peaks of the set-up, the first step and the steps after it (``MemoryPhases``)."""
    import torch
    from transformers import TrainerCallback

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.step_times: list[float] = []
            self.measured_steps: list[int] = []
            self.losses: dict[int, float] = {}
            self.logs: list[dict] = []
            self.rss_before_train: int | None = None
            self.cuda_allocated_before_train: int | None = None
            self.counter = BatchCounter()
            self.memory = MemoryPhases(cuda)
            self._last: float | None = None

        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            sync()
            self.rss_before_train = current_rss_bytes()
            if cuda:
                self.cuda_allocated_before_train = torch.cuda.memory_allocated()
            self.memory.end("setup")
            if train_dataloader is not None:
                self.counter.install(train_dataloader)
            else:
                self.counter.error = "no train_dataloader in on_train_begin"

        def on_step_begin(self, args, state, control, **kwargs):
            if warmup == 0 and state.global_step == 0:
                sync()
                self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            now = time.perf_counter()
            if state.global_step > warmup and self._last is not None:
                self.step_times.append(now - self._last)
                self.measured_steps.append(state.global_step)
            if state.global_step == 1:
                self.memory.end("first_step")
            self._last = time.perf_counter()  # the memory reading is not part of the next step

        def on_train_end(self, args, state, control, **kwargs):
            if state.global_step > 1:
                self.memory.end("steady")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses[int(state.global_step)] = float(logs["loss"])
                self.logs.append({"step": int(state.global_step), **{k: v for k, v in logs.items() if _jsonable(v)}})

    return StepTimer()


def _jsonable(value) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


def describe_batch(batch) -> dict | None:
    """What a collated batch holds, whatever its layout: ``tokens`` (logical: the non-pad tokens of its 2B
    prompt+response sequences), ``processed_tokens`` (input positions that are not padding: fewer than ``tokens``
    when the prompt is shared), ``padded_tokens`` (all input positions), ``response_tokens``, ``sum_len_sq``
    (over the logical sequences) and ``layout``. None when the batch is not recognised.
    """
    import torch

    if "segment_ids" in batch:  # amapo shared_prompt: one row per pair, 0 pad, 1 prompt, 2 chosen, 3 rejected
        segments = batch["segment_ids"]
        prompt, chosen, rejected = ((segments == s).sum(-1) for s in (1, 2, 3))
        lengths = torch.cat([prompt + chosen, prompt + rejected])
        processed, padded, layout = int((segments > 0).sum()), segments.numel(), "shared_prompt"
    elif keys := [k for k in MASKS if k in batch]:
        lengths = torch.cat([batch[k].sum(-1).reshape(-1) for k in keys])
        processed, padded, layout = int(lengths.sum()), sum(batch[k].numel() for k in keys), "padded"
    elif "position_ids" in batch and batch["input_ids"].shape[0] == 1:  # packed: positions restart per sequence
        positions = batch["position_ids"].reshape(-1)
        starts = [*torch.nonzero(positions == 0).reshape(-1).tolist(), positions.numel()]
        lengths = torch.tensor([b - a for a, b in itertools.pairwise(starts)])
        processed, padded, layout = positions.numel(), positions.numel(), "packed"
    else:
        return None
    lengths = lengths.long()
    out = {
        "tokens": int(lengths.sum()),
        "processed_tokens": processed,
        "padded_tokens": int(padded),
        "sum_len_sq": int((lengths**2).sum()),
        "layout": layout,
    }
    if "response_lengths" in batch:  # amapo, every layout
        out["response_tokens"] = int(batch["response_lengths"].sum())
    elif "completion_mask" in batch:  # TRL DPO
        out["response_tokens"] = int(batch["completion_mask"].sum())
    elif "chosen_labels" in batch and "rejected_labels" in batch:  # TRL CPO
        out["response_tokens"] = int((batch["chosen_labels"] != -100).sum() + (batch["rejected_labels"] != -100).sum())
    elif "labels" in batch:  # the Liger loop
        out["response_tokens"] = int((batch["labels"] != -100).sum())
    return out


class BatchCounter:
    """Wraps a DataLoader's collate_fn to record what each collated batch holds, in the order they are made."""

    def __init__(self) -> None:
        self.batches: list[dict | None] = []
        self.error: str | None = None

    def install(self, dataloader) -> None:
        target = getattr(dataloader, "base_dataloader", dataloader)  # accelerate wraps the torch DataLoader
        inner = getattr(target, "collate_fn", None)
        if inner is None:
            self.error = "the dataloader has no collate_fn"
            return

        def counting_collate(features):
            batch = inner(features)
            try:
                self.batches.append(describe_batch(batch))
            except Exception as e:  # counting must never break training
                self.batches.append(None)
                self.error = f"{type(e).__name__}: {e}"
            return batch

        try:
            target.collate_fn = counting_collate
        except Exception as e:
            self.error = f"could not wrap collate_fn: {type(e).__name__}: {e}"


class MemoryPhases:
    """Peak memory of each phase of a worker: ``setup`` (process start to the first step: loading, tokenizing),
    ``first_step`` (amapo's first-batch self-check included) and ``steady`` (every step after the first).

    RSS peaks are this process's own high-water mark (``peak_rss_bytes``), reset between phases through
    ``/proc/self/clear_refs`` (Linux 4.0+; where that is refused, phases after the first report None, since their
    mark would include the earlier ones). CUDA peaks are ``torch.cuda.max_memory_allocated``, reset likewise.
    """

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.phases: dict[str, dict] = {}
        self.resettable = True

    def end(self, name: str) -> None:
        rss = peak_rss_bytes() if self.resettable or not self.phases else None
        entry = {"peak_rss": rss}
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            entry["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        self.phases[name] = entry
        self.resettable = self.resettable and reset_peak_rss()


def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM of its own address space.

    Not ``getrusage``'s ru_maxrss: Linux carries that across fork and exec (the exec records the forking parent's
    high-water mark), so a worker started by a large parent reports the parent's peak; on the H200 every worker
    showed the same 5,397,897,216 bytes.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes, no exec carry-over
    return int(rss if sys.platform == "darwin" else rss * 1024)


def reset_peak_rss() -> bool:
    """Set this process's RSS high-water mark to its current RSS (``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def measure_peak_flops(cuda: bool, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    if cuda:
        n, dtype, device, reps = 4096, torch.bfloat16, "cuda", 20
    else:
        n, dtype, device, reps = 2048, torch.float32, "cpu", 10
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    times = []
    for i in range(reps + 2):  # two warm-up products
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if cuda:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    del a, b
    if cuda:
        torch.cuda.empty_cache()
    return {
        "what": f"median of {reps} {str(dtype).replace('torch.', '')} {n}x{n}x{n} torch.matmul on {device}",
        "flops_per_s": 2.0 * n**3 / median,
        "gflops_per_s": 2.0 * n**3 / median / 1e9,
        "threads": torch.get_num_threads(),
    }


def machine_info(cuda: bool) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: version_of(name) for name in PACKAGES},
    }
    with contextlib.suppress(OSError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["ram_gb"] = round(pages / GB, 1)
    return info
