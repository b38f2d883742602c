"""One run per output folder: a second live run is refused (``amapo.lock``), ``--overwrite_output_dir`` removes the
previous run before the new one starts, a resume only continues a checkpoint written with the same options, and
old checkpoints are deleted only once a newer one is complete."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from amapo.errors import UserError
from amapo.train import reliability, trainer
from amapo.train.parsing import parse_train_args
from amapo.train.reliability import COMPLETE_MARKER, last_complete_checkpoint, rotate_checkpoints
from amapo.train.report import CONFIG_FILE
from amapo.train.run import run_training
from amapo.train.run_folder import LOCK_FILE, holds_a_run
from amapo.train.trainer import PreferenceTrainer

QUICK = ("--eval_datasets", "none", "--max_steps", "2")
CHECKPOINTS = ("--save_strategy", "steps", "--save_steps", "1")
HOST = socket.gethostname()


def train(out: Path, *args: str):
    return run_training(parse_train_args(["--config", "builtin", "--output_dir", str(out), *QUICK, *args]))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-step run with checkpoint-1 and checkpoint-2 (the built-in recipe: learning_rate 0.001)."""
    out = tmp_path_factory.mktemp("finished") / "out"
    train(out, *CHECKPOINTS)
    return out


@pytest.fixture
def old_run(finished_run, tmp_path) -> Path:
    """A private copy of ``finished_run`` to change."""
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    return out


class Killed(RuntimeError):
    """A kill of the training process at a chosen moment."""


def write_lock(out: Path, pid: int, host: str = HOST) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_FILE
    lock.write_text(json.dumps({"pid": pid, "host": host, "started": "2025-01-02T03:04:05Z", "command": "amapo train"}))
    return lock


def names(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


# --- the lock ---------------------------------------------------------------------------------------------------


def test_a_live_run_holds_its_folder(tmp_path):
    lock = write_lock(tmp_path / "out", os.getpid())  # this test process: alive
    message = rf"is in use by another run \(pid {os.getpid()} on {HOST}, started 2025-01-02T03:04:05Z\): choose "
    with pytest.raises(UserError, match=message + "another --output_dir, or wait for that run to end"):
        train(tmp_path / "out")
    assert lock.exists() and names(tmp_path / "out") == {LOCK_FILE}  # the other run's folder is untouched


def test_a_lock_from_another_host_is_refused_naming_the_file_to_delete(tmp_path):
    lock = write_lock(tmp_path / "out", 1, host="elsewhere")
    with pytest.raises(UserError, match=rf"pid 1 on elsewhere.*cannot be checked.*if it is gone, delete {lock}"):
        train(tmp_path / "out")
    assert lock.exists()


def test_a_stale_lock_is_taken_over_with_a_note_and_released_after_the_run(tmp_path, capsys):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(finished.stdout)  # a process that has ended
    write_lock(tmp_path / "out", pid)
    train(tmp_path / "out")
    err = capsys.readouterr().err
    note = f"amapo: took over the lock of run pid {pid} ({HOST}, started 2025-01-02T03:04:05Z), which is no longer"
    assert note + " running" in err
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert not (tmp_path / "out" / LOCK_FILE).exists()


def test_the_lock_is_released_after_a_failing_run(tmp_path, monkeypatch):
    def failing_train(self, *args, **kwargs):
        assert (tmp_path / "out" / LOCK_FILE).exists()  # held while training
        raise RuntimeError("boom")

    monkeypatch.setattr(PreferenceTrainer, "train", failing_train)
    with pytest.raises(RuntimeError, match="boom"):
        train(tmp_path / "out")
    assert not (tmp_path / "out" / LOCK_FILE).exists()


def test_a_refused_run_leaves_no_folder_behind(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint folder"):
        train(tmp_path / "out", "--resume_from_checkpoint", str(tmp_path / "nowhere"))
    assert not (tmp_path / "out").exists()


# --- overwrite --------------------------------------------------------------------------------------------------


def test_overwrite_removes_the_previous_run_and_keeps_a_users_files(old_run, capsys):
    (old_run / "notes.txt").write_text("lr sweep, run 3\n")
    (old_run / "runs" / "Jan01_host").mkdir(parents=True)  # TensorBoard's
    (old_run / "eval").mkdir()  # `amapo eval` of the old model
    capsys.readouterr()
    train(old_run, "--max_steps", "1", "--overwrite_output_dir", "true")
    err = capsys.readouterr().err
    line = f"amapo: --overwrite_output_dir: removed the previous run in {old_run} (checkpoint-1, checkpoint-2, "
    assert line in err
    for name in ("metrics.jsonl", "model.safetensors", "amapo_config.yaml", "runs", "eval", "training_args.bin"):
        assert name in err.split(line)[1]
    assert (old_run / "notes.txt").read_text() == "lr sweep, run 3\n"
    assert not list(old_run.glob("checkpoint-*")) and not (old_run / "runs").exists()
    steps = [json.loads(line)["step"] for line in (old_run / "metrics.jsonl").read_text().splitlines()]
    assert steps and max(steps) == 1  # only the new 1-step run's metrics, none appended to the old run's
    with pytest.raises(UserError, match=r"no complete checkpoint-\* in .*: check --output_dir"):
        train(old_run, "--resume_from_checkpoint", "last")  # the old run's checkpoints are gone with it


def test_overwrite_with_resume_is_refused_and_removes_nothing(old_run):
    before = names(old_run)
    with pytest.raises(UserError, match="--overwrite_output_dir true starts the run over and --resume_from_checkpoint"):
        train(old_run, "--overwrite_output_dir", "true", "--resume_from_checkpoint", "last")
    assert names(old_run) == before


def test_a_folder_holding_a_run_is_refused_without_overwrite(old_run):
    with pytest.raises(UserError, match=r"already holds a finished run.*resume it with --resume_from_checkpoint last.*"
                                        r"--overwrite_output_dir true"):  # fmt: skip
        train(old_run)


def test_holds_a_run_looks_at_what_a_run_writes(tmp_path):
    write_lock(tmp_path, 1)
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "README.md").write_text("# my experiments\n")  # not a model card
    assert not holds_a_run(tmp_path)
    (tmp_path / "checkpoint-5").mkdir()
    assert holds_a_run(tmp_path)


# --- resume -----------------------------------------------------------------------------------------------------


def test_resume_refuses_a_checkpoint_of_other_options(old_run):
    with pytest.raises(UserError) as refused:
        train(old_run, "--learning_rate", "5e-4", "--resume_from_checkpoint", "last")
    assert str(refused.value) == (
        f"{old_run / 'checkpoint-2'} was written with learning_rate=0.001; this run has learning_rate=0.0005: "
        "resume with the same options, or start over with --overwrite_output_dir true"
    )


def test_resume_names_an_unset_option_in_words(old_run):
    with pytest.raises(UserError) as refused:
        train(old_run, "--data_seed", "7", "--resume_from_checkpoint", "last")
    assert "was written with data_seed=unset; this run has data_seed=7: " in str(refused.value)


def test_resume_allows_other_logging_and_a_longer_run(old_run):
    train(old_run, "--logging_steps", "1", "--max_steps", "3", "--resume_from_checkpoint", "last", *CHECKPOINTS)
    assert last_complete_checkpoint(old_run) == old_run / "checkpoint-3"


def test_a_checkpoint_without_its_options_resumes_with_a_warning(old_run, capsys):
    (old_run / "checkpoint-2" / CONFIG_FILE).unlink()  # as written before checkpoints recorded their options
    train(old_run, "--max_steps", "3", "--resume_from_checkpoint", "last")
    assert f"amapo: {old_run / 'checkpoint-2'} has no record of its options" in capsys.readouterr().err


def test_resume_without_a_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / "out" / "checkpoint-4").mkdir(parents=True)  # interrupted: no completion marker
    with pytest.raises(UserError, match=r"--resume_from_checkpoint last: no complete checkpoint-\* in"):
        train(tmp_path / "out", "--resume_from_checkpoint", "last")


# --- checkpoint rotation ----------------------------------------------------------------------------------------


def test_rotation_deletes_incomplete_then_oldest_and_keeps_the_newest_and_best(tmp_path):
    for step, complete in ((1, True), (2, True), (3, True), (4, True), (5, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / COMPLETE_MARKER).write_text("ok\n")
    rotate_checkpoints(tmp_path, 2, newest=tmp_path / "checkpoint-4", keep=str(tmp_path / "checkpoint-1"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-4"]


def test_save_total_limit_1_leaves_one_complete_checkpoint(tmp_path):
    train(tmp_path / "out", "--max_steps", "3", "--save_total_limit", "1", *CHECKPOINTS)
    assert [p.name for p in (tmp_path / "out").glob("checkpoint-*")] == ["checkpoint-3"]
    assert (tmp_path / "out" / "checkpoint-3" / COMPLETE_MARKER).exists()
    assert (tmp_path / "out" / "checkpoint-3" / CONFIG_FILE).exists()


def test_a_kill_while_a_checkpoint_is_completed_keeps_the_previous_complete_one(tmp_path, monkeypatch):
    """Before, the Trainer deleted checkpoint-1 before checkpoint-2 was marked complete: a kill between left none."""
    mark = reliability.mark_checkpoint_complete

    def killed_at_step_2(folder, loss_fn):
        if folder.name == "checkpoint-2":
            raise Killed("while marking checkpoint-2 complete")
        mark(folder, loss_fn)

    monkeypatch.setattr(trainer, "mark_checkpoint_complete", killed_at_step_2)
    with pytest.raises(Killed):
        train(tmp_path / "out", "--max_steps", "3", "--save_total_limit", "1", *CHECKPOINTS)
    last = last_complete_checkpoint(tmp_path / "out")
    assert last == tmp_path / "out" / "checkpoint-1" and (last / "model.safetensors").exists()
    monkeypatch.undo()
    train(tmp_path / "out", "--max_steps", "3", "--save_total_limit", "1", "--resume_from_checkpoint", "last",
          *CHECKPOINTS)  # fmt: skip
    assert last_complete_checkpoint(tmp_path / "out") == tmp_path / "out" / "checkpoint-3"


def test_a_kill_right_after_rotation_leaves_the_new_complete_checkpoint(tmp_path, monkeypatch):
    rotate = reliability.rotate_checkpoints

    def killed_after_rotating(output_dir, limit, newest, keep=None):
        rotate(output_dir, limit, newest, keep)
        if newest.name == "checkpoint-2":
            raise Killed("right after rotating")

    monkeypatch.setattr(trainer, "rotate_checkpoints", killed_after_rotating)
    with pytest.raises(Killed):
        train(tmp_path / "out", "--max_steps", "3", "--save_total_limit", "1", *CHECKPOINTS)
    assert [p.name for p in (tmp_path / "out").glob("checkpoint-*")] == ["checkpoint-2"]
    assert last_complete_checkpoint(tmp_path / "out") == tmp_path / "out" / "checkpoint-2"
