"""How many weights a few AdamW steps at the paper's learning rate change: fp32 weights vs bf16 weights.

Why ``amapo train`` refuses full-parameter training on bf16/fp16 weights without an fp32 master copy
(``amapo.train.precision``). Trains the built-in model for ``--steps`` optimizer steps (AMaPO, lr 6e-7 as the
Llama-3 recipes, cosine schedule with warm-up 0.1) once with float32 weights and once with bfloat16 weights
(``--allow_low_precision_weights true``), and prints, per dtype, the share of trainable weights that moved.

    python benchmarks/low_precision_updates.py [--steps 10] [--learning_rate 6e-7]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from amapo.builtin import resolve_source
from amapo.train.parsing import parse_train_args
from amapo.train.run import run_training


def changed_share(dtype: str, steps: int, learning_rate: float, workdir: Path) -> float:
    out = workdir / dtype
    args = ["--config", "builtin", "--output_dir", str(out), "--max_steps", str(steps), "--learning_rate",
            str(learning_rate), "--torch_dtype", dtype, "--allow_low_precision_weights", "true",
            "--eval_datasets", "none", "--logging_steps", str(steps)]  # fmt: skip
    run_training(parse_train_args(args))
    start = load_file(Path(resolve_source("builtin:tiny-llama")) / "model.safetensors")
    end = load_file(out / "model.safetensors")
    moved = total = 0
    for name, value in end.items():
        before = start[name].to(value.dtype)  # the weights as training started from them
        moved += (value != before).sum().item()
        total += value.numel()
    return moved / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--learning_rate", type=float, default=6e-7)
    a = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as workdir:
        shares = {d: changed_share(d, a.steps, a.learning_rate, Path(workdir)) for d in ("float32", "bfloat16")}
    print(f"\nweights changed after {a.steps} AdamW steps at lr {a.learning_rate:g} (built-in model, AMaPO):")
    for dtype, share in shares.items():
        print(f"  {dtype:>8} weights: {100 * share:.2f}%")


if __name__ == "__main__":
    main()
