"""Freed tensors go back to the operating system on a CPU (glibc's ``mallopt``), so a step's peak is its own.

PyTorch allocates CPU tensors with ``malloc``. glibc serves a request of at least its *mmap threshold* with a fresh
mapping, returned to the system on ``free``, and smaller ones from its heap, which keeps what is freed. The threshold
is dynamic: each freed mapping raises it to that mapping's size, up to 32 MiB. So activations under 32 MiB (a
[8 pairs x 3,075 tokens, 256] fp32 hidden state is 25 MB) land in the heap after the first step, where a step's
freed activations stay resident and fragment: amapo's default step on ``benchmarks/memory_vs_length.py``'s model at
2,048 words per pair peaked at 4.07 GiB of RSS with glibc's threshold and at 3.14 GiB with it fixed at 1 MiB
(docs/speed-and-memory.md). ``mallopt(M_MMAP_THRESHOLD, n)`` fixes the threshold (and turns the dynamic one off)
for the rest of the process.

``AMAPO_CPU_MMAP_THRESHOLD`` (bytes; 0 leaves malloc as it is) sets it; glibc's own ``MALLOC_MMAP_THRESHOLD_``, when
set, is left to rule. Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
DEFAULT_THRESHOLD = 1 << 20  # 1 MiB: every activation-sized tensor gets its own mapping
ENV = "AMAPO_CPU_MMAP_THRESHOLD"


def return_freed_tensors_to_the_system() -> int | None:
    """Fix glibc's mmap threshold (``AMAPO_CPU_MMAP_THRESHOLD`` or 1 MiB); the threshold set, or None if left alone."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None
    threshold = int(os.environ.get(ENV, DEFAULT_THRESHOLD))
    if threshold <= 0:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc: its mallopt numbers mean something else
        return None
    if libc.mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        return None
    logger.info("CPU: tensors of %d bytes or more are mapped from the system and returned to it when freed", threshold)
    return threshold
