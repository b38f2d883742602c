"""Constants every part of the benchmark shares, and small helpers."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

RESULT_MARKER = "PREFSTEP_RESULT "
AMAPO_FRAMEWORKS = {"amapo-simpo": "simpo", "amapo-amapo": "amapo", "amapo-dpo": "dpo"}
FRAMEWORKS = ("amapo-simpo", "amapo-amapo", "amapo-dpo", "trl-cpo-simpo", "trl-dpo", "liger-simpo")
REFERENCE_BASED = {"amapo-dpo", "trl-dpo"}
BASELINE = "trl-cpo-simpo"
SIMPO_BETA, SIMPO_GAMMA = 2.0, 1.0  # SimPO's Llama-3-Base setting; amapo: gamma_beta_ratio = gamma / beta
DPO_BETA = 0.1
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")  # ids 0..3; words are 4..V-1
MODEL_SHAPE = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "intermediate_size": 688,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}
MAX_LENGTH_SLACK = 8  # every framework's max_length is max_len + this: BOS and EOS fit, nothing is truncated
BENCHMARKS = Path(__file__).resolve().parents[1]
REPO_ROOT = BENCHMARKS.parent
SCRIPT = BENCHMARKS / "preference_step.py"  # the entry point; the parent starts workers as this file
GB = 1024**3  # sizes are reported in GiB


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def liger_status() -> tuple[bool, str]:
    """(usable, description): whether ``LigerFusedLinearSimPOLoss`` imports here."""
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearSimPOLoss  # noqa: F401
    except Exception as e:  # ImportError, or a broken triton install raising something else
        return False, f"{type(e).__name__}: {e}".splitlines()[0][:200]
    return True, f"liger-kernel {version_of('liger-kernel')}"


def base_framework(name: str) -> str:
    """``amapo-amapo@715727a`` (a baseline checkout's run, ``--amapo_baseline``) -> ``amapo-amapo``."""
    return name.split("@", 1)[0]


def worker_device(a) -> str:
    return "cuda" if a.device == "cuda" else "cpu"
