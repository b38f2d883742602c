"""Bad numbers and interruptions never cost a run: non-finite steps skipped and reported, SIGTERM and SIGKILL
resumed to the same weights, incomplete checkpoints ignored, finished runs not overwritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from amapo.builtin import resolve_source
from amapo.errors import UserError
from amapo.losses.methods import SimPOLoss
from amapo.train.parsing import parse_train_args
from amapo.train.reliability import COMPLETE_MARKER, NONFINITE_FILE, NonFiniteStepError, last_complete_checkpoint
from amapo.train.run import run_training


def train(out: Path, *args: str):
    return run_training(parse_train_args(["--config", "builtin", "--output_dir", str(out), *args]))


def write_pairs(path: Path, n: int, long_rows: tuple[int, ...] = ()) -> Path:
    rows = [json.loads(line) for line in Path(resolve_source("builtin:reverse")).read_text().splitlines()[:n]]
    for i in long_rows:  # a chosen answer far longer than any other: the trigger for the failing loss below
        rows[i]["chosen"] = "abcdefghijklmnop" * 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def nan_on_long_answers(monkeypatch):
    """SimPO whose loss is NaN for any batch holding a chosen answer longer than 20 tokens."""
    from nan_on_long_answers import failing_forward

    monkeypatch.setattr(SimPOLoss, "forward", failing_forward)


def test_non_finite_step_is_skipped_and_names_its_rows(tmp_path, nan_on_long_answers):
    data = write_pairs(tmp_path / "pairs.jsonl", 12, long_rows=(5,))
    result = train(tmp_path / "out", "--dataset", str(data), "--method", "simpo", "--per_device_train_batch_size", "1",
                   "--num_train_epochs", "1", "--eval_datasets", "none")  # fmt: skip
    skipped = [json.loads(line) for line in (result.output_dir / NONFINITE_FILE).read_text().splitlines()]
    assert len(skipped) == 1 and skipped[0]["rows"] == [5]
    weights = load_file(result.output_dir / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_run_whose_every_step_was_skipped_fails_and_saves_no_model(tmp_path, nan_on_long_answers, capsys):
    """Issue 27: a run that skipped its only steps ended with exit 0 and an untrained "final" model. Now it is one
    line and exit 1, no model; each skipped step is its own line naming what was not finite and where."""
    from amapo.cli import main

    data = write_pairs(tmp_path / "pairs.jsonl", 8, long_rows=tuple(range(8)))
    out = tmp_path / "out"
    code = main(["train", "--config", "builtin", "--output_dir", str(out), "--dataset", str(data), "--method", "simpo",
                 "--per_device_train_batch_size", "4", "--max_steps", "2", "--eval_datasets", "none",
                 "--train_sampling_strategy", "sequential"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and not (out / "model.safetensors").exists()
    lines = [line for line in err.splitlines() if line.startswith("amapo")]
    assert lines[0] == ("amapo: step 1 skipped, the weights not updated: non-finite loss in dataset rows [0, 1, 2, 3] "
                        "(1 in a row; the run stops at 3)")  # fmt: skip
    assert lines[1].startswith("amapo: step 2 skipped") and "[4, 5, 6, 7]" in lines[1]
    assert lines[2].startswith("amapo train: stopped: every one of the 2 optimizer steps had a non-finite loss")
    assert len(lines) == 3 and "Traceback" not in err


def test_a_non_finite_input_is_named_in_the_skip_line(capsys):
    from amapo.train.reliability import NonFiniteGuard

    guard = NonFiniteGuard(0, Path(os.devnull))
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    guard.wrap(optimizer, step_number=lambda: 4)
    chosen, losses = torch.tensor([-1.0, float("nan"), -2.0]), torch.tensor([0.1, float("nan"), 0.2])
    terms = {"chosen_logps": chosen, "ref_chosen_logps": None, "loss": losses}
    guard.note_batch(torch.tensor(float("nan")), torch.tensor([7, 8, 9]), terms)
    weight.grad = torch.ones(1)
    optimizer.step()
    assert weight.item() == 0.0  # skipped
    assert capsys.readouterr().err.strip() == (
        "amapo: step 4 skipped, the weights not updated: non-finite chosen_logps in dataset rows [8]; loss in "
        "dataset rows [8]"
    )


def test_too_many_non_finite_steps_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, nan_on_long_answers):
    data = write_pairs(tmp_path / "pairs.jsonl", 12, long_rows=tuple(range(4, 12)))
    out = tmp_path / "out"
    with pytest.raises(NonFiniteStepError, match="2 optimizer steps in a row"):
        train(out, "--dataset", str(data), "--method", "simpo", "--per_device_train_batch_size", "4",
              "--num_train_epochs", "3", "--eval_datasets", "none", "--max_nonfinite_steps", "2",
              "--save_strategy", "steps", "--save_steps", "1", "--seed", "3")  # fmt: skip
    assert not (out / "model.safetensors").exists()  # no final model from a broken run
    last = last_complete_checkpoint(out)
    assert last is not None
    weights = load_file(last / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_output_folder_holding_a_run_is_not_overwritten(tmp_path):
    args = ("--max_steps", "1", "--eval_datasets", "none")
    train(tmp_path / "out", *args)
    with pytest.raises(UserError, match=r"already holds a finished run.*--overwrite_output_dir true") as refused:
        train(tmp_path / "out", *args)
    # the resume hint only where a complete checkpoint makes it work
    has_checkpoint = last_complete_checkpoint(tmp_path / "out") is not None
    assert ("--resume_from_checkpoint last" in str(refused.value)) == has_checkpoint
    train(tmp_path / "out", *args, "--overwrite_output_dir", "true")


def test_missing_local_paths_are_named(tmp_path):
    with pytest.raises(UserError, match=r"--model_name_or_path: no such file or folder \./nowhere"):
        train(tmp_path / "out", "--model_name_or_path", "./nowhere")
    with pytest.raises(UserError, match="--dataset: no such file"):
        train(tmp_path / "out", "--dataset", "/no/such/pairs.jsonl")


def test_incomplete_checkpoint_is_never_resumed_from(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / COMPLETE_MARKER).write_text("ok\n")
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-4"


# --- real interruptions of a training process ----------------------------------------------------------------

LONG_RUN = ("train", "--config", "builtin", "--max_steps", "300", "--per_device_train_batch_size", "4",
            "--eval_datasets", "none", "--logging_steps", "1", "--seed", "5")  # fmt: skip


def amapo_process(out: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "amapo.cli", *LONG_RUN, "--output_dir", str(out), *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"training ended early: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, "timed out waiting for the training process"
        time.sleep(0.05)


def logged_steps(out: Path) -> int:
    path = out / "metrics.jsonl"
    return sum(1 for line in path.read_text().splitlines() if '"loss"' in line) if path.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "out"
    process = amapo_process(out)
    assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
    return load_file(out / "model.safetensors"), train_metrics(out)


def train_metrics(out: Path) -> dict[str, float]:
    return json.loads((out / "results.json").read_text())["train"]


def resume(out: Path) -> dict[str, torch.Tensor]:
    process = amapo_process(out, "--resume_from_checkpoint", "last")
    assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
    return load_file(out / "model.safetensors")


def assert_whole_run_reported(out: Path, uninterrupted) -> None:
    """The resumed run's train_loss is the whole run's, as the uninterrupted run reports it (issue 27: it was the
    resumed part's alone, unlabelled), and the resumed part's own is there under its own name."""
    resumed, full = train_metrics(out), uninterrupted[1]
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-9)
    assert "train_loss_since_resume" in resumed and "train_loss_since_resume" not in full


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_ends_bitwise_equal(tmp_path, uninterrupted):
    out = tmp_path / "out"
    process = amapo_process(out, "--save_strategy", "no")
    wait_for(lambda: logged_steps(out) >= 20, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    checkpoint = last_complete_checkpoint(out)
    assert checkpoint is not None and 20 <= int(checkpoint.name.split("-")[1]) < 300
    assert not (out / "model.safetensors").exists()
    assert_bitwise_equal(resume(out), uninterrupted[0])
    assert_whole_run_reported(out, uninterrupted)


def test_sigkill_at_an_arbitrary_step_resumes_bitwise_equal(tmp_path, uninterrupted):
    out = tmp_path / "out"
    process = amapo_process(out, "--save_strategy", "steps", "--save_steps", "25", "--save_total_limit", "2")
    wait_for(lambda: last_complete_checkpoint(out) is not None and logged_steps(out) >= 60, process)
    process.kill()  # SIGKILL: no handler runs, possibly in the middle of writing a checkpoint
    process.wait(timeout=60)
    assert_bitwise_equal(resume(out), uninterrupted[0])
    assert_whole_run_reported(out, uninterrupted)


# --- options and trust ------------------------------------------------------------------------------------


def test_lora_without_peft_installed_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # as if PEFT were not installed
    with pytest.raises(ImportError, match=r"use_peft needs PEFT"):
        train(tmp_path / "out", "--use_peft", "true", "--max_steps", "1", "--eval_datasets", "none")


def test_pickled_weights_are_refused(tmp_path):
    """Only safetensors are read: a folder with a pickled pytorch_model.bin is not loaded (it could run code)."""
    import shutil

    from transformers import AutoModelForCausalLM

    source = Path(resolve_source("builtin:tiny-llama"))
    folder = tmp_path / "pickled"
    shutil.copytree(source, folder)
    state = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"holds pickled weights \(\.bin\) and no safetensors; amapo loads"):
        train(tmp_path / "out", "--model_name_or_path", str(folder), "--max_steps", "1", "--eval_datasets", "none")


def test_outputs_are_safetensors_only(tmp_path):
    result = train(tmp_path / "out", "--max_steps", "2", "--eval_datasets", "none", "--save_strategy", "steps",
                   "--save_steps", "1")  # fmt: skip
    for folder in (result.output_dir, result.output_dir / "checkpoint-1", result.output_dir / "checkpoint-2"):
        assert (folder / "model.safetensors").exists(), folder
        assert not list(folder.glob("pytorch_model*.bin")), folder
    # Other states of a checkpoint (optimizer, scheduler, RNG, loss) are tensors only, read with weights_only=True.


# --- ranks agree -------------------------------------------------------------------------------------------------


def _guard_worker(rank: int, port: int, folder: str, results) -> None:
    import torch.distributed as dist

    from amapo.train.reliability import NonFiniteGuard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        shard = torch.nn.Parameter(torch.ones(3))  # this rank's shard of a sharded parameter (FSDP2, ZeRO)
        optimizer = torch.optim.SGD([shard], lr=1.0)
        guard = NonFiniteGuard(limit=0, log_file=Path(folder) / f"rank{rank}.jsonl")
        guard.wrap(optimizer, step_number=lambda: 1)
        shard.grad = torch.tensor([float("nan") if rank == 0 else 1.0] * 3)  # only rank 0's shard is bad
        optimizer.step()
        results[rank] = (shard.detach().clone(), guard.skipped)
    finally:
        dist.destroy_process_group()


def test_a_non_finite_shard_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    """A sharded optimizer sees only its rank's gradients: if ranks decided alone, rank 1 would step and rank 0
    would not, and the model's shards would no longer belong to one step."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_guard_worker, args=(port, str(tmp_path), results), nprocs=2, join=True)
        results = dict(results)
    for rank in (0, 1):
        weights, skipped = results[rank]
        assert skipped == 1, rank
        assert weights.tolist() == [1.0, 1.0, 1.0], rank
