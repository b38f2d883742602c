#!/usr/bin/env python
"""One import of everything the GPU check's parts use, before any of them runs (issue 34): a wheel set that cannot
import (transformers 5.24 over an older huggingface-hub, pydantic-core over an older typing-extensions) stops the
part in seconds with the reason, not minutes into a benchmark.

    python benchmarks/gpu_imports.py [--site DIR]   # exit 1 when a module needed here fails to import

Each module's version (or the error) is printed, one line each. ``required`` modules must import everywhere; ``gpu``
ones only where CUDA is available (a CPU toy run has no Liger-Kernel: its Triton kernels need a GPU); ``optional``
ones never fail the probe. With ``--site`` (the folder gpu_check.sh installed the carried wheels into), every
top-level module of every carried wheel must also import from that folder: a copy of the image's that comes first on
sys.path would be the one a benchmark runs.
"""

from __future__ import annotations

import csv
import importlib
import sys
import time
from pathlib import Path

# (module, when it must import): what amapo, benchmarks/ and their workers import from outside the standard library
MODULES = [
    ("torch", "required"),
    ("transformers", "required"),
    ("accelerate", "required"),
    ("datasets", "required"),
    ("huggingface_hub", "required"),
    ("tokenizers", "required"),
    ("safetensors", "required"),
    ("peft", "required"),
    ("pydantic", "required"),
    ("yaml", "required"),
    ("trl", "required"),
    ("trl.experimental.cpo", "required"),
    ("deepspeed", "required"),
    ("amapo", "required"),
    ("amapo.cli", "required"),
    ("amapo.train.run", "required"),
    ("liger_kernel", "gpu"),
    ("liger_kernel.chunked_loss", "gpu"),
    ("liger_kernel.ops.fused_linear_cross_entropy", "gpu"),
    ("flash_attn", "optional"),  # only ever a ready wheel (gpu_check.sh never compiles it); sdpa without it
]
# carried distributions' top-level names that are no module of their own to import
NOT_MODULES = {"bin", "include", "share"}


def version_of(module) -> str:
    return str(getattr(module, "__version__", "") or getattr(module, "VERSION", "") or "(no __version__)")


def probe(modules: list[tuple[str, str]], on_gpu: bool) -> tuple[list[str], int]:
    """(one line per module, number of failures that count): imports each module in turn."""
    lines, failures = [], 0
    for name, when in modules:
        counts = when == "required" or (when == "gpu" and on_gpu)
        start = time.perf_counter()
        try:
            module = importlib.import_module(name)
        except Exception as error:  # an ImportError, or whatever a package raises while importing
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if counts:
                failures += 1
                status = "FAILED (required" + (" on a GPU)" if when == "gpu" else ")")
            else:
                status = "missing (optional" + (" without a GPU)" if when == "gpu" else ")")
            lines.append(f"{name}: {status}: {reason}")
            continue
        where = getattr(module, "__file__", None) or "?"
        lines.append(f"{name} {version_of(module)} ({time.perf_counter() - start:.1f} s, {where})")
    return lines, failures


def carried_modules(site: Path) -> dict[str, str]:
    """top-level module -> its distribution, for every wheel installed into ``site`` (from each RECORD)."""
    out = {}
    for record in sorted(site.glob("*.dist-info/RECORD")):
        distribution = record.parent.name.split("-")[0]
        with record.open(newline="") as rows:
            for row in csv.reader(rows):
                parts = Path(row[0]).parts
                if not parts or parts[0].startswith("..") or parts[0].endswith((".dist-info", ".libs", ".data")):
                    continue
                top = parts[0]
                if len(parts) == 1 and top.endswith(".py"):
                    out[top[:-3]] = distribution
                elif len(parts) > 1 and parts[1] == "__init__.py" and top not in NOT_MODULES:
                    out[top] = distribution
    return out


def probe_site(site: Path) -> tuple[list[str], int]:
    """Every carried top-level module imports, and from ``site`` rather than from the image's own copy."""
    lines, failures = [], 0
    root = str(site.resolve())
    for name, distribution in sorted(carried_modules(site).items()):
        try:
            module = importlib.import_module(name)
        except Exception as error:
            failures += 1
            lines.append(f"carried {name} ({distribution}): FAILED: {type(error).__name__}: {error}")
            continue
        where = str(Path(getattr(module, "__file__", None) or "?").resolve())
        if not where.startswith(root):
            failures += 1
            lines.append(f"carried {name} ({distribution}): FAILED: imported from {where}, not from {root} "
                         "(put the carried wheels first on PYTHONPATH)")  # fmt: skip
    lines.append(f"carried: {len(carried_modules(site))} top-level modules from {root}, {failures} failed")
    return lines, failures


def main(argv: list[str]) -> int:
    site = Path(argv[argv.index("--site") + 1]) if "--site" in argv else None
    start = time.perf_counter()
    try:
        import torch

        on_gpu = torch.cuda.is_available()
    except Exception:  # the probe names the error
        on_gpu = False
    lines, failures = probe(MODULES, on_gpu)
    if site is not None:
        site_lines, site_failures = probe_site(site)
        lines, failures = lines + site_lines, failures + site_failures
    for line in lines:
        print(f"[gpu_imports] {line}")
    where = "a GPU" if on_gpu else "no GPU: Liger-Kernel optional"
    verdict = f"{failures} required import(s) failed" if failures else "every required import works"
    print(f"[gpu_imports] {verdict} ({where}; {time.perf_counter() - start:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
