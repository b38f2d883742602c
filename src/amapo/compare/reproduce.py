"""Numbers in the docs that stay true: the committed comparison reports and the README's default-run table are
made by one script (``reports/regenerate.py``), and a test reruns a piece of each and compares.

Training a small model for hundreds of steps is chaotic in floating point: a change in the last bit of one matmul
(another CPU's kernels, another thread count) ends in other numbers, as much as another seed does. So the script
runs every command with ``NUMERICS_ENV`` (a fixed thread count: reductions split across threads round by the
split), and records a fingerprint of the arithmetic it ran on: a fixed computation of torch and transformers alone
(a tiny Llama's forward, backward and AdamW step, a matmul, transcendental functions), independent of amapo's code.
A rerun compares numbers only where the fingerprint matches; on another CPU family or other library versions it
cannot tell a stale report from other rounding, and says so. (Portable settings exist, PyTorch's
``ATEN_CPU_CAPABILITY=default`` and MKL's ``MKL_CBWR=COMPATIBLE``, but they slowed the default comparison about 1.3x
on the project's machine, past its 15-minute budget, and glibc's math still picks its code by CPU.)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

# Set before torch loads (each command runs in its own process).
NUMERICS_ENV = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}  # the project machine's 2 cores, on any machine
PROVENANCE_FILE = "provenance.json"


def numerics_env() -> dict[str, str]:
    return {**os.environ, **NUMERICS_ENV}


def fingerprint() -> str:
    """A hash of what this process's torch and transformers compute for a fixed tiny Llama's forward, backward and
    optimizer step (the layers amapo's built-in model trains) and a few raw operations: equal hashes, equal
    arithmetic (as far as these operations show)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, 300, (4, 24))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    digest = hashlib.sha256()
    for tensor in (out.logits, *(p.grad for p in model.parameters())):
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    for tensor in model.parameters():
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    x = torch.randn(257, 129)
    for tensor in (x @ x.T, x.exp(), x.log_softmax(-1), torch.nn.functional.logsigmoid(x), x.sum(0)):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint_here() -> str:
    """The fingerprint of this machine under ``NUMERICS_ENV`` (a fresh process: the settings act on import)."""
    code = "from amapo.compare.reproduce import fingerprint; print(fingerprint())"
    done = subprocess.run([sys.executable, "-c", code], env=numerics_env(), capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def run_amapo(args: list[str], cwd: Path | None = None) -> None:
    """``amapo ARGS`` in a process of its own under ``NUMERICS_ENV``; its output passes through."""
    subprocess.run([sys.executable, "-m", "amapo.cli", *args], env=numerics_env(), cwd=cwd, check=True)


def read_provenance(folder: Path) -> dict:
    return json.loads((folder / PROVENANCE_FILE).read_text())


def compare_args(config) -> list[str]:
    """A ``CompareConfig``'s options as ``amapo compare`` flags (all but methods, seeds, confirmation seeds and
    the output folder: what one run of it needs)."""
    from dataclasses import fields

    args = []
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name in ("methods", "seeds", "confirm_seeds", "output_dir", "overwrite_output_dir") or value == []:
            continue
        if isinstance(value, list):
            args += [f"--{f.name}", *map(str, value)]
        else:
            args += [f"--{f.name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args
