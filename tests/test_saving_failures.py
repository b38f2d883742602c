"""Issue 33: a save that fails never costs more than the save. A full disk while writing a checkpoint or the final
model is one line (what, how much it needed, what is free, what was removed, what to run next) and exit 1, not a
48-line traceback; the folder it leaves resumes from its last complete checkpoint and never holds a config.json
without weights; a run that cannot fit is refused before training. And the small things: no `None` in a message,
one line saying which checkpoint a resume continues, SIGTERM while loading as one line, exit 143."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from launching import signal_while_loading
from safetensors.torch import load_file
from transformers import TrainerCallback

import amapo.train.run
from amapo.builtin import resolve_source
from amapo.cli import main
from amapo.disk_space import in_words, out_of_space
from amapo.train import reliability, saving, trainer
from amapo.train.parsing import recipe_defaults
from amapo.train.reliability import COMPLETE_MARKER, TiedWeightsFilter
from amapo.train.saving import FinalSave, OutOfSpace, SaveSizes

QUICK = ("--config", "builtin", "--eval_datasets", "none", "--max_steps", "2")
CHECKPOINTS = ("--save_strategy", "steps", "--save_steps", "1")


def full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def amapo_train(out: Path, *args: str) -> int:
    return main(["train", *QUICK, "--output_dir", str(out), *args])


def names(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


def stderr_lines(capsys) -> list[str]:
    """The lines amapo wrote on stderr (not the progress bars)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("amapo")]


SIZES = SaveSizes(final=493_568, checkpoint=1_480_704)  # the built-in tiny-llama: 123,392 fp32 weights, AdamW


# --- recognising a full disk --------------------------------------------------------------------------------------


def test_a_full_disk_is_recognised_whichever_library_was_writing(tmp_path, monkeypatch):
    assert out_of_space(full()) == errno.ENOSPC
    assert out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded")) == errno.EDQUOT
    # tokenizers and safetensors (Rust) raise their own types, the OS error in words
    assert out_of_space(Exception("No space left on device (os error 28)")) == errno.ENOSPC
    assert out_of_space(RuntimeError("Error while serializing: I/O error: Disk quota exceeded (os error 122)")) == 122
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = full()
    assert out_of_space(wrapped) == errno.ENOSPC
    # torch.save says only "unexpected pos": a full disk only where the folder has less free than the write needs
    torch_failed = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    monkeypatch.setattr("amapo.disk_space.free_bytes", lambda path: 1000)
    assert out_of_space(torch_failed, tmp_path, needed=2000) == errno.ENOSPC
    assert out_of_space(torch_failed, tmp_path, needed=500) is None
    assert out_of_space(torch_failed) is None
    # other failures to write stay what they are
    for other in (PermissionError(errno.EACCES, "denied"), FileNotFoundError(2, "x"), Exception("(os error 13)")):
        assert out_of_space(other) is None
    assert [in_words(n) for n in (512, 1536, 3 * 2**20, 5 * 2**30)] == ["512 B", "1.5 KiB", "3.0 MiB", "5.0 GiB"]


def test_save_sizes_count_tied_weights_once_and_adam_moments_in_a_checkpoint():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_source("builtin:tiny-llama"))
    weights = sum(p.numel() * 4 for p in model.parameters())  # fp32; lm_head is the embedding, counted once
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert SaveSizes.of(model, "adamw_torch") == SaveSizes(final=weights, checkpoint=3 * weights)
    assert SaveSizes.of(model, "adamw_torch", save_only_model=True) == SaveSizes(final=weights, checkpoint=weights)
    assert SaveSizes.of(model, "adamw_8bit") == SaveSizes(final=weights, checkpoint=weights)  # a lower bound


# --- the final save, undone -------------------------------------------------------------------------------------


def run_folder_before_the_final_save(out: Path) -> Path:
    """What a run with checkpoints holds when its final save starts, and a user's file."""
    for step in (1, 2):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / COMPLETE_MARKER).write_text("ok\n")
    (out / "metrics.jsonl").write_text("{}\n")
    (out / "notes.txt").write_text("mine\n")
    return out


def test_a_failed_final_save_removes_only_what_it_wrote_and_says_how_to_go_on(tmp_path):
    out = run_folder_before_the_final_save(tmp_path / "out")
    with pytest.raises(OutOfSpace) as stopped, FinalSave(out, SIZES):
        (out / "config.json").write_text("{}")
        (out / "generation_config.json").write_text("{}")
        raise full()  # while writing model.safetensors
    assert names(out) == {"checkpoint-1", "checkpoint-2", "metrics.jsonl", "notes.txt"}
    free = in_words(shutil.disk_usage(out).free)
    assert str(stopped.value) == (
        f"no space left on device saving the final model in {out} (its weights alone take 482.0 KiB; {free} free "
        "there): removed what it had written (config.json, generation_config.json); free space and resume with "
        "--resume_from_checkpoint last (checkpoint-2), or resume in another --output_dir with "
        f"--resume_from_checkpoint {out / 'checkpoint-2'}"
    )


def test_a_failed_final_save_over_a_finished_run_removes_the_rest_of_the_model_it_was_replacing(tmp_path):
    """A resume past a finished run's end replaces its final model: once part of it is overwritten, the rest is no
    model either, and a results.json beside no weights would call the folder finished."""
    out = run_folder_before_the_final_save(tmp_path / "out")
    for name in ("config.json", "model.safetensors", "results.json"):
        (out / name).write_text("old")
    with (
        pytest.raises(OutOfSpace, match=r"written \(config\.json, model\.safetensors, results\.json\)"),
        FinalSave(out, SIZES),
    ):
        (out / "config.json").write_text("new")
        raise full()
    assert names(out) == {"checkpoint-1", "checkpoint-2", "metrics.jsonl", "notes.txt"}


def test_a_final_save_failing_for_another_reason_is_undone_and_keeps_its_traceback(tmp_path, capsys):
    out = run_folder_before_the_final_save(tmp_path / "out")
    (out / "checkpoint-2" / COMPLETE_MARKER).unlink()  # only checkpoint-1 is complete
    with pytest.raises(RuntimeError, match="a bug"), FinalSave(out, SIZES):
        (out / "config.json").write_text("{}")
        raise RuntimeError("a bug")
    assert "config.json" not in names(out)
    assert stderr_lines(capsys)[-1] == (
        "amapo: the final save failed: removed what it had written (config.json); free space and resume with "
        f"--resume_from_checkpoint last (checkpoint-1), or resume in another --output_dir with "
        f"--resume_from_checkpoint {out / 'checkpoint-1'}"
    )


def test_without_a_checkpoint_the_message_says_the_training_is_lost_and_how_to_start_again(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lost = "no checkpoint was saved, so the training is lost: free space and run again with --overwrite_output_dir true"
    with pytest.raises(OutOfSpace, match=f"{lost}, or choose another --output_dir$"), FinalSave(out, SIZES):
        raise Exception("No space left on device (os error 28)")  # as tokenizers raises it


# --- whole runs, a full disk injected ---------------------------------------------------------------------------


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    mark = reliability.mark_checkpoint_complete

    def full_at_checkpoint_2(folder, loss_fn):
        if folder.name == "checkpoint-2":
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "loss_state.pt"))
        mark(folder, loss_fn)

    monkeypatch.setattr(trainer, "mark_checkpoint_complete", full_at_checkpoint_2)
    assert amapo_train(out, "--max_steps", "3", *CHECKPOINTS) == 1
    lines = stderr_lines(capsys)
    assert lines[-1].startswith(f"amapo train: stopped: no space left on device writing {out / 'checkpoint-2'} (a "
                                "checkpoint of this run takes at least 1.4 MiB; ")  # fmt: skip
    assert lines[-1].endswith(
        "free there): removed the incomplete checkpoint-2; free space and resume with --resume_from_checkpoint last "
        f"(checkpoint-1), or resume in another --output_dir with --resume_from_checkpoint {out / 'checkpoint-1'}"
    )
    assert names(out) - {"metrics.jsonl"} == {"checkpoint-1"}  # no incomplete checkpoint, no final model's files

    monkeypatch.undo()
    assert amapo_train(out, "--max_steps", "3", *CHECKPOINTS, "--resume_from_checkpoint", "last") == 0
    err = capsys.readouterr().err
    resumed = [line for line in err.splitlines() if line.startswith("amapo: resuming")]
    assert resumed == [f"amapo: resuming from {out / 'checkpoint-1'} (step 1 of 3)"]
    assert (out / "model.safetensors").exists() and (out / "checkpoint-3" / COMPLETE_MARKER).exists()


def test_a_full_disk_during_the_final_save_leaves_a_folder_that_resumes(tmp_path, monkeypatch, capsys):
    """Before, a config.json without weights stayed and a rerun was refused as "already holds a run"."""
    out = tmp_path / "out"

    def full_at_the_model_card(*_):  # config.json, the weights and results.json are written by then
        raise full()

    monkeypatch.setattr(amapo.train.run, "write_model_card", full_at_the_model_card)
    run = ("--max_steps", "3", "--save_strategy", "steps", "--save_steps", "2")
    assert amapo_train(out, *run) == 1
    lines = stderr_lines(capsys)
    assert lines[-1].startswith(f"amapo train: stopped: no space left on device saving the final model in {out} "
                                "(its weights alone take 482.0 KiB; ")  # fmt: skip
    assert "removed what it had written (amapo_config.yaml, chat_template.jinja, config.json, " in lines[-1]
    assert lines[-1].endswith("free space and resume with --resume_from_checkpoint last (checkpoint-3), or resume in "
                              f"another --output_dir with --resume_from_checkpoint {out / 'checkpoint-3'}")  # fmt: skip
    assert names(out) == {"checkpoint-2", "checkpoint-3", "metrics.jsonl"}  # (the Trainer saves at the last step)

    monkeypatch.undo()
    assert amapo_train(out, *run) == 2  # a rerun as it was: refused, with the hint that works
    assert "resume it with --resume_from_checkpoint last" in stderr_lines(capsys)[-1]
    assert amapo_train(out, *run, "--resume_from_checkpoint", "last") == 0
    assert {"model.safetensors", "config.json", "results.json", "README.md"} <= names(out)
    # only the save is redone: the final model is checkpoint-3's, not a step 4 past --max_steps 3
    assert names(out) >= {"checkpoint-3"} and "checkpoint-4" not in names(out)
    results = json.loads((out / "results.json").read_text())["train"]
    assert results["global_step"] == 3 and "train_loss_since_resume" not in results
    saved, final = load_file(out / "checkpoint-3" / "model.safetensors"), load_file(out / "model.safetensors")
    assert saved.keys() == final.keys() and all(torch.equal(saved[k], final[k]) for k in saved)


def test_a_run_whose_saves_cannot_fit_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(saving, "free_bytes", lambda path: 1_000_000)
    monkeypatch.setattr(trainer.PreferenceTrainer, "train", lambda *_, **__: pytest.fail("training started"))
    out = tmp_path / "out"
    assert amapo_train(out, *CHECKPOINTS) == 2
    assert stderr_lines(capsys)[-1] == (
        f"amapo train: error: --output_dir {out}: 976.6 KiB free on its filesystem, and this run writes at least "
        "1.9 MiB there (one checkpoint 1.4 MiB, the final model 482.0 KiB): free space or choose another --output_dir"
    )
    assert not out.exists()  # the folder the run would have made is not left behind
    # no checkpoint within the run's steps: the final model alone fits
    monkeypatch.undo()
    monkeypatch.setattr(saving, "free_bytes", lambda path: 1_000_000)
    assert amapo_train(out, "--save_strategy", "steps", "--save_steps", "5") == 0


def test_a_run_stopped_by_non_finite_steps_without_a_checkpoint_says_so_in_words(tmp_path, monkeypatch, capsys):
    from nan_on_long_answers import failing_forward

    from amapo.losses.methods import SimPOLoss

    monkeypatch.setattr(SimPOLoss, "forward", failing_forward)
    rows = [json.loads(line) for line in Path(resolve_source("builtin:reverse")).read_text().splitlines()[:8]]
    for row in rows:
        row["chosen"] = "abcdefghijklmnop" * 2
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = amapo_train(tmp_path / "out", "--dataset", str(data), "--method", "simpo", "--max_nonfinite_steps", "1",
                       "--per_device_train_batch_size", "4")  # fmt: skip
    last = stderr_lines(capsys)[-1]
    assert code == 1 and last.endswith("stopped without saving a final model. No checkpoint was saved.")
    assert "None" not in last


# --- a real full filesystem ------------------------------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path):
    """An 8 MiB tmpfs (needs root, or a container that allows mounts); skipped where mounting is not permitted."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


class FillTheDisk(TrainerCallback):
    """Fill the filesystem, but for ``left`` bytes, at the end of step ``step`` (0: when training ends)."""

    def __init__(self, folder: Path, step: int, left: int = 64 * 1024) -> None:
        self.filler, self.step, self.left = folder.parent / "filler", step, left

    def fill(self) -> None:
        with self.filler.open("ab") as f:
            f.write(b"\0" * max(shutil.disk_usage(self.filler.parent).free - self.left, 0))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.fill()

    def on_train_end(self, args, state, control, **kwargs):
        if self.step == 0:
            self.fill()


def cli_train_with(callback, monkeypatch, out: Path, *args: str) -> int:
    run_training = amapo.train.run.run_training
    monkeypatch.setattr(amapo.train.run, "run_training", lambda config: run_training(config, callbacks=[callback]))
    return amapo_train(out, *args)


def test_a_real_full_disk_at_a_checkpoint(small_filesystem, monkeypatch, capsys):
    out = small_filesystem / "out"
    filling = FillTheDisk(out, step=2)
    assert cli_train_with(filling, monkeypatch, out, "--max_steps", "3", *CHECKPOINTS) == 1
    lines = stderr_lines(capsys)
    assert lines[-1].startswith(f"amapo train: stopped: no space left on device writing {out / 'checkpoint-2'} ")
    assert "removed the incomplete checkpoint-2; free space and resume with --resume_from_checkpoint last " \
           "(checkpoint-1)" in lines[-1]  # fmt: skip
    assert names(out) - {"metrics.jsonl"} == {"checkpoint-1"}
    filling.filler.unlink()
    monkeypatch.undo()
    assert amapo_train(out, "--max_steps", "3", *CHECKPOINTS, "--resume_from_checkpoint", "last") == 0
    assert (out / "model.safetensors").exists()


def test_a_real_full_disk_at_the_final_save(small_filesystem, monkeypatch, capsys):
    out = small_filesystem / "out"
    filling = FillTheDisk(out, step=0)
    assert cli_train_with(filling, monkeypatch, out, "--max_steps", "2", "--save_strategy", "steps",
                          "--save_steps", "2") == 1  # fmt: skip
    line = stderr_lines(capsys)[-1]
    assert line.startswith(f"amapo train: stopped: no space left on device saving the final model in {out} ")
    assert "Traceback" not in line and (out / "checkpoint-2" / COMPLETE_MARKER).exists()
    assert names(out) == {"checkpoint-2", "metrics.jsonl"}  # no config.json without weights
    filling.filler.unlink()
    monkeypatch.undo()
    assert amapo_train(out, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
                       "--resume_from_checkpoint", "last") == 0  # fmt: skip
    assert (out / "model.safetensors").exists()


def test_a_real_filesystem_too_small_for_one_checkpoint_is_refused_before_training(small_filesystem, capsys):
    (small_filesystem / "filler").write_bytes(b"\0" * (7 * 2**20))  # 1 MiB left: the final model fits, a checkpoint not
    out = small_filesystem / "out"
    assert amapo_train(out, *CHECKPOINTS) == 2
    assert stderr_lines(capsys)[-1].startswith(f"amapo train: error: --output_dir {out}: ")
    assert not out.exists()


# --- small things -----------------------------------------------------------------------------------------------


def test_the_built_in_recipe_line_is_printed_once_per_run_not_once_per_process(monkeypatch, capsys):
    recipe_defaults([])
    assert capsys.readouterr().out == (
        "amapo: no --config, --model_name_or_path or --dataset: running the built-in recipe 'builtin'\n"
    )
    monkeypatch.setenv("RANK", "1")  # another process of a launched run (torchrun, accelerate launch)
    recipe_defaults([])
    assert capsys.readouterr().out == ""


def test_a_resume_does_not_warn_about_the_tied_lm_head():
    """The built-in model ties lm_head.weight to the input embeddings: its checkpoints hold the tensor once, and the
    Trainer's resume warned on every resume that lm_head.weight was missing (it is loaded, as the embeddings)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_source("builtin:tiny-llama"))
    quiet = TiedWeightsFilter(model)

    def shown(message: str) -> bool:
        return quiet.filter(logging.LogRecord("transformers.trainer", logging.WARNING, __file__, 1, message, (), None))

    assert not shown("There were missing keys in the checkpoint model loaded: ['lm_head.weight'].")
    assert shown("There were missing keys in the checkpoint model loaded: ['lm_head.weight', 'model.norm.weight'].")
    assert shown("There were missing keys in the checkpoint model loaded: ['model.norm.weight'].")
    both = "There were missing keys in the checkpoint model loaded: ['lm_head.weight', 'model.embed_tokens.weight']."
    assert shown(both)  # the tied weight not loaded under either name
    assert shown("Some other warning.")


def test_sigterm_while_loading_is_one_line_and_exit_143(tmp_path):
    """As Ctrl-C (test_cli_user_errors.test_ctrl_c_while_importing_is_one_line_and_exit_130): SIGTERM before
    training was a silent exit 143; during training the checkpoint-then-stop of test_reliability applies."""
    done = signal_while_loading(signal.SIGTERM, tmp_path / "out")
    err = done.stderr
    assert done.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "amapo train: terminated" and "Traceback" not in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_forked_worker_still_ends_on_sigterm():
    """The SIGTERM handler raises only in the process that installed it: a pool's forked worker that gets SIGTERM
    (datasets' map with num_proc ends its pool so) dies of it, with no traceback."""
    from amapo.cli import stop_on_sigterm

    previous = signal.signal(signal.SIGTERM, stop_on_sigterm(os.getpid()))
    try:
        pid = os.fork()
        if pid == 0:  # the worker: wait to be ended
            time.sleep(30)
            os._exit(0)
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
