"""``amapo train`` end to end under the packaged accelerate configs (DDP, FSDP2, DeepSpeed ZeRO-3), adapted to 2 CPU
processes: 3 steps of SGD without clipping give the same losses, batch statistics and final weights on all three
(issue 13), and the saved model loads with ``from_pretrained``.

The adaptation: 2 processes instead of 8, no mixed precision (CPUs), no rank-0-only loading for FSDP (it needs a
device to broadcast from). FSDP runs through ``tests/fsdp_on_cpu.py``, since accelerate only turns FSDP on for
accelerator devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from launching import failure_message, free_port
from safetensors.torch import load_file

from amapo.recipes import ACCELERATE_DIR

TESTS = Path(__file__).parent
TRAIN = (
    "train", "--config", "builtin", "--max_steps", "3", "--eval_datasets", "none", "--logging_steps", "1",
    "--optim", "sgd", "--max_grad_norm", "0", "--learning_rate", "1e-2", "--warmup_ratio", "0",
    "--per_device_train_batch_size", "4", "--margin_stats", "all_ranks", "--lm_head_chunk_size", "4",
)  # fmt: skip


def cpu_config(name: str, folder: Path, processes: int = 2) -> Path:
    config = yaml.safe_load((ACCELERATE_DIR / f"{name}.yaml").read_text())
    config.update(num_processes=processes, mixed_precision="no")
    if "fsdp_config" in config:
        config["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] = False
    path = folder / f"{name}-cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def accelerate_launch(name: str, folder: Path, program: list[str] | None = None, args=TRAIN, processes=2) -> Path:
    out = folder / name
    program = program or ([str(TESTS / "fsdp_on_cpu.py")] if name == "fsdp" else ["-m", "amapo.cli"])
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(cpu_config(name, folder, processes)), "--main_process_port", str(free_port()), *program, *args,
               "--output_dir", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(failure_message(name, result, folder / f"{name}.log"))
    return out


def train_logs(out: Path) -> list[dict]:
    return [log for log in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in log]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    return accelerate_launch("ddp", tmp_path_factory.mktemp("ddp"))


@pytest.mark.parametrize("engine", ["fsdp", "zero3"])
def test_sharded_training_equals_ddp(engine, ddp, tmp_path):
    if engine == "zero3":
        pytest.importorskip("deepspeed")
    sharded = accelerate_launch(engine, tmp_path)
    want, got = train_logs(ddp), train_logs(sharded)
    assert len(got) == len(want) == 3
    for a, b in zip(got, want, strict=True):
        for key in ("loss", "batch/mu", "margin/mean", "rewards/accuracies"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key

    want_weights = load_file(ddp / "model.safetensors")
    got_weights = load_file(sharded / "model.safetensors")
    assert set(want_weights) <= set(got_weights)  # FSDP's full state dict also writes the tied head
    for key, tensor in want_weights.items():
        torch.testing.assert_close(got_weights[key], tensor, rtol=0, atol=1e-6, msg=key)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(sharded)
    for key, tensor in want_weights.items():
        torch.testing.assert_close(model.state_dict()[key], tensor, rtol=0, atol=1e-6, msg=key)


def test_non_finite_steps_under_deepspeed_are_recorded_with_their_rows(tmp_path):
    """DeepSpeed skips a non-finite step itself, before the optimizer (and the guard's wrap) sees it: the step is
    still recorded with its row, and the next, finite step is not skipped in its place."""
    pytest.importorskip("deepspeed")
    from amapo.builtin import resolve_source
    from amapo.train.reliability import NONFINITE_FILE

    rows = [json.loads(line) for line in Path(resolve_source("builtin:reverse")).read_text().splitlines()[:12]]
    rows[5]["chosen"] = "abcdefghijklmnop" * 2  # the only batch whose loss is NaN
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["train", "--config", "builtin", "--dataset", str(data), "--method", "simpo", "--eval_datasets", "none",
            "--per_device_train_batch_size", "1", "--num_train_epochs", "1"]  # fmt: skip
    out = accelerate_launch("zero3", tmp_path, [str(TESTS / "nan_on_long_answers.py")], args, processes=1)
    skipped = [json.loads(line) for line in (out / NONFINITE_FILE).read_text().splitlines()]
    assert [entry["rows"] for entry in skipped] == [[5]]
    assert all(torch.isfinite(w).all() for w in load_file(out / "model.safetensors").values())
