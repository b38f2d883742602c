"""Data-parallel training on CPU (2 processes, gloo, launched by torchrun as accelerate does) against one process
over the same global batch: AMaPO's statistics defined by ``margin_stats`` and the final weights compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from launching import failure_message
from safetensors.torch import load_file

COMMON = (
    "train", "--config", "builtin", "--max_steps", "3", "--eval_datasets", "none", "--logging_steps", "1",
    "--optim", "sgd", "--max_grad_norm", "0", "--learning_rate", "1e-2", "--warmup_ratio", "0",
)  # fmt: skip
# SGD without clipping, so that any difference in the gradient shows in the weights.


def launch(out: Path, processes: int, *args: str) -> Path:
    if processes == 1:
        command = [sys.executable, "-m", "amapo.cli"]
    else:
        # --standalone: a rendezvous on a free local port, so parallel test runs never collide
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   "-m", "amapo.cli"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [*command, *COMMON, "--output_dir", str(out), *args], env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise AssertionError(failure_message(command[-1], result, out.parent / "stderr.log"))
    return out


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model.safetensors")


def train_logs(out: Path) -> list[dict]:
    return [log for log in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in log]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def one_process_batch_of_8(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("single") / "out", 1, "--per_device_train_batch_size", "8")


@pytest.mark.parametrize("method", ["amapo", "simpo"])
def test_two_processes_with_gathered_statistics_equal_one_process(tmp_path, method, one_process_batch_of_8):
    single = one_process_batch_of_8
    if method != "amapo":
        single = launch(tmp_path / "single", 1, "--per_device_train_batch_size", "8", "--method", method)
    ddp = launch(tmp_path / "ddp", 2, "--per_device_train_batch_size", "4", "--method", method,
                 "--margin_stats", "all_ranks")  # fmt: skip
    assert_same_weights(ddp, single)
    if method == "amapo":
        for a, b in zip(train_logs(ddp), train_logs(single), strict=True):
            assert a["batch/pairs"] == b["batch/pairs"] == 8
            assert a["batch/mu"] == pytest.approx(b["batch/mu"], abs=1e-6)
            assert a["margin/mean"] == pytest.approx(b["margin/mean"], abs=1e-6)


def test_per_device_statistics_differ_from_the_union(tmp_path, one_process_batch_of_8):
    ddp = launch(tmp_path / "ddp", 2, "--per_device_train_batch_size", "4", "--margin_stats", "micro_batch")
    assert all(log["batch/pairs"] == 4 for log in train_logs(ddp))  # each rank's own 4 pairs
    wa, wb = weights(ddp), weights(one_process_batch_of_8)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) > 1e-5


def test_optimizer_step_statistics_span_ranks_and_accumulation(tmp_path, one_process_batch_of_8):
    """2 processes x 2 pairs x 2 accumulation steps with statistics over the whole optimizer step equal one
    process with 8 pairs per step."""
    ddp = launch(tmp_path / "ddp", 2, "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2",
                 "--margin_stats", "optimizer_step")  # fmt: skip
    assert all(log["batch/pairs"] == 8 for log in train_logs(ddp))
    assert_same_weights(ddp, one_process_batch_of_8)


@pytest.mark.parametrize(
    "per_device,steps,pool",
    [(2, 2, 4), (1, 4, 4), (2, 2, 8)],
    ids=["pools-across-ranks", "pools-across-ranks-and-micro-batches", "one-pool-per-step"],
)
def test_margin_pools_do_not_depend_on_how_the_step_is_held(tmp_path, per_device, steps, pool, one_process_batch_of_8):
    """--margin_pool_size N on 2 processes x ``per_device`` pairs x ``steps`` accumulation steps gives the
    statistics and weights of one process holding the same 8-pair step as ``per_device`` x 2 * ``steps``: pools
    of N pairs in the order the sampler drew them, through an all-gather (N = 4 = 2 x 2), the statistics pre-pass
    over the whole step (1 x 4: a pool spans both ranks and two micro-batches), or one pool per step (N = 8)."""
    ddp = launch(tmp_path / "ddp", 2, "--per_device_train_batch_size", str(per_device),
                 "--gradient_accumulation_steps", str(steps), "--margin_pool_size", str(pool))  # fmt: skip
    single = launch(tmp_path / "single", 1, "--per_device_train_batch_size", str(per_device),
                    "--gradient_accumulation_steps", str(2 * steps), "--margin_pool_size", str(pool))  # fmt: skip
    for a, b in zip(train_logs(ddp), train_logs(single), strict=True):
        assert a["batch/pairs"] == b["batch/pairs"] == pool
        assert a["batch/mu"] == pytest.approx(b["batch/mu"], abs=1e-6)
        assert a["batch/sigma"] == pytest.approx(b["batch/sigma"], abs=1e-6)
        assert a["margin/mean"] == pytest.approx(b["margin/mean"], abs=1e-6)
    assert_same_weights(ddp, single)
    if pool == 8:
        assert_same_weights(ddp, one_process_batch_of_8)  # = statistics over one batch of 8
    else:  # and the pools matter: statistics over the whole step of 8 give other weights
        wa, wb = weights(ddp), weights(one_process_batch_of_8)
        assert max((wa[k] - wb[k]).abs().max().item() for k in wa) > 1e-5
