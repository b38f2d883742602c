"""On a CPU with glibc, amapo fixes malloc's mmap threshold so that freed activations leave the process
(``amapo.cpu_memory``); without it, 25 MB tensors freed after glibc raised its dynamic threshold stay resident."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt (Linux only)"
)

SCRIPT = """
import sys, torch
from amapo.cpu_memory import return_freed_tensors_to_the_system
def rss(): return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
print("threshold", return_freed_tensors_to_the_system() if sys.argv[1] == "fixed" else None)
big = torch.ones(30 * 2**20 // 4); del big  # glibc now serves up to 30 MiB from its heap (the dynamic threshold)
before = rss()
step, kept = [], []
for _ in range(16):  # a step's activations (400 MiB), small tensors that outlive them in between
    step.append(torch.ones(25 * 2**20 // 4))
    kept.append(torch.ones(16384 + 64 * len(kept)))  # 64 KiB, from the top of the heap
del step
print("kept", (rss() - before) / 2**20)
"""


def kept_mib(mode: str, env: dict) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, check=True)
    threshold, kept = out.stdout.split("\n")[:2]
    return threshold.split()[1], float(kept.split()[1])


def test_freed_activations_leave_the_process():
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "AMAPO_CPU_MMAP_THRESHOLD")}
    assert kept_mib("fixed", env) == ("1048576", pytest.approx(0, abs=20))
    threshold, kept = kept_mib("glibc", env)
    assert threshold == "None" and kept > 300  # what the fix is for: glibc's heap keeps them
    # the user's own setting rules: glibc's variable, or amapo's set to 0
    assert kept_mib("fixed", {**env, "MALLOC_MMAP_THRESHOLD_": "65536"})[0] == "None"
    assert kept_mib("fixed", {**env, "AMAPO_CPU_MMAP_THRESHOLD": "0"})[0] == "None"
