"""Constants every part of the benchmark shares, and small helpers."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

RESULT_MARKER = "PREFSTEP_RESULT "
AMAPO_FRAMEWORKS = {"amapo-simpo": "simpo", "amapo-amapo": "amapo", "amapo-dpo": "dpo"}
FRAMEWORKS = (
    "amapo-simpo",
    "amapo-amapo",
    "amapo-dpo",
    "trl-cpo-simpo",
    "trl-cpo-simpo-liger",
    "trl-dpo",
    "liger-simpo",
)
DEFAULT_FRAMEWORKS = tuple(f for f in FRAMEWORKS if f != "trl-cpo-simpo-liger")  # the CPU table's, as before
LIGER_FRAMEWORKS = {"liger-simpo", "trl-cpo-simpo-liger"}  # need liger-kernel
GPU_ONLY_FRAMEWORKS = {"trl-cpo-simpo-liger"}  # Liger's Triton kernels in the model
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


# amapo's speed options, as suffixes of an amapo framework's name: amapo-amapo+flex+liger-head (issue 26)
AMAPO_OPTIONS = {
    "flex": {"attn_implementation": "flex_attention"},
    "compiled-head": {"lm_head_kernel": "compiled"},
    "liger-head": {"lm_head_kernel": "liger"},
    "liger-kernels": {"use_liger_kernel": True},
    "compile": {"torch_compile": True},
}
ALL_OPTIONS = "flex+liger-head+liger-kernels+compile"  # every option together (the head's fastest kernel)
GPU_ONLY_OPTIONS = {"flex": "FlexAttention's backward needs a GPU", "liger-head": "Liger's Triton kernels need a GPU",
                    "liger-kernels": "Liger's Triton kernels need a GPU"}  # fmt: skip


def base_framework(name: str) -> str:
    """``amapo-amapo@715727a`` (a baseline checkout's run, ``--amapo_baseline``) or ``amapo-amapo+flex`` (with an
    option) -> ``amapo-amapo``."""
    return name.split("@", 1)[0].split("+", 1)[0]


def framework_options(name: str) -> list[str]:
    """The ``AMAPO_OPTIONS`` a framework's name asks for (``amapo-amapo+flex+compile`` -> flex, compile)."""
    return name.split("@", 1)[0].split("+")[1:]


def known_framework(name: str) -> bool:
    options = framework_options(name)
    return base_framework(name) in FRAMEWORKS and (
        not options or (base_framework(name) in AMAPO_FRAMEWORKS and set(options) <= set(AMAPO_OPTIONS))
    )


def needs_liger(name: str) -> bool:
    """A Liger framework, or an amapo one with a Liger option (``+liger-head``, ``+liger-kernels``)."""
    return name in LIGER_FRAMEWORKS or any(o.startswith("liger") for o in framework_options(name))


def worker_device(a) -> str:
    return "cuda" if a.device == "cuda" else "cpu"
