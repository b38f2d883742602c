"""Saves that fail: a full disk while a checkpoint or the final model is written is one line (what was being written,
what it takes, what is free, what was removed, what to run next) and leaves a folder that resumes from its last
complete checkpoint; a run whose saves cannot fit is refused before training (issue 33)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from amapo.disk_space import described, free_bytes, in_words, out_of_space
from amapo.errors import UserError
from amapo.hf_internals import CHECKPOINT_PREFIX
from amapo.run_files import COMPLETE_MARKER
from amapo.train.reliability import TrainingFailed, last_complete_checkpoint, say
from amapo.train.run_folder import final_model_files


class OutOfSpace(TrainingFailed):
    """The output folder's filesystem filled up (or the disk quota ran out) while the run wrote there: one line with
    what was being written, what it takes, what is free, what was removed, and how to go on (exit 1, as any run that
    ended without its model; a full disk found before training is a ``UserError``, exit 2)."""


# Optimizers whose state is two full-size moments per trainable weight (not 8- or 4-bit, low-rank or factored).
FULL_ADAM = ("adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adamw_anyprecision")


@dataclass(frozen=True)
class SaveSizes:
    """Bytes of one save of this run, at least: ``final`` the final model (its weights as saved; with LoRA the
    adapter, which is what ``save_model`` writes), ``checkpoint`` one checkpoint (those weights and, for an Adam
    optimizer, its two moments per trainable weight). Tokenizer, configs and the Trainer's state files are small
    and left out: lower bounds, so that a refusal on them is never wrong."""

    final: int
    checkpoint: int

    @classmethod
    def of(cls, model, optim: str, save_only_model: bool = False) -> SaveSizes:
        def size(p: torch.Tensor) -> int:  # a DeepSpeed ZeRO-3 parameter is empty here; ds_numel is its size
            return getattr(p, "ds_numel", p.numel()) * p.element_size()

        parameters = list(model.parameters())  # a tied (shared) weight once, as it is saved
        trainable = sum(size(p) for p in parameters if p.requires_grad)
        final = trainable if hasattr(model, "peft_config") else sum(size(p) for p in parameters)
        adam = getattr(optim, "value", optim) in FULL_ADAM and not save_only_model
        return cls(final=final, checkpoint=final + (2 * trainable if adam else 0))


def saves_a_checkpoint(config, total_steps: int, resumed: str | None = None) -> bool:
    """Whether the run surely writes a checkpoint before its step ``total_steps`` (after the step of the checkpoint
    it ``resumed``, if any)."""
    strategy = getattr(config.save_strategy, "value", config.save_strategy)
    if strategy == "no":
        return False
    if strategy != "steps" or config.save_steps < 1:  # per epoch, or a fraction of the run
        return True
    step = Path(resumed).name.removeprefix(f"{CHECKPOINT_PREFIX}-") if resumed else "0"
    every = int(config.save_steps)
    return (int(step) // every + 1) * every <= total_steps if step.isdigit() else False


def check_free_space(output_dir: Path, sizes: SaveSizes, checkpoints: bool) -> None:
    """Refuse, before training, a run whose output filesystem cannot hold what it must write: the final model, and
    one checkpoint if the run saves one. These are lower bounds, so a run refused here could only have finished if
    space were freed while it ran: free it first (no option skips the check). Quotas are not seen here; a quota
    that runs out mid-run is reported as a full disk is."""
    free = free_bytes(output_dir)
    needed = sizes.final + (sizes.checkpoint if checkpoints else 0)
    if free is None or free >= needed:
        return
    parts = [f"one checkpoint {in_words(sizes.checkpoint)}"] if checkpoints else []
    parts.append(f"the final model {in_words(sizes.final)}")
    raise UserError(
        f"--output_dir {output_dir}: {in_words(free)} free on its filesystem, and this run writes at least "
        f"{in_words(needed)} there ({', '.join(parts)}): free space or choose another --output_dir"
    )


def how_to_go_on(output_dir: Path) -> str:
    """What to run after a save failed in ``output_dir``: resume its last complete checkpoint, or start again."""
    last = last_complete_checkpoint(output_dir)
    if last is None:
        return (
            "no checkpoint was saved, so the training is lost: free space and run again with --overwrite_output_dir "
            "true, or choose another --output_dir"
        )
    return (
        f"free space and resume with --resume_from_checkpoint last ({last.name}), or resume in another "
        f"--output_dir with --resume_from_checkpoint {last}"
    )


def stop_if_out_of_space(err: BaseException, output_dir: Path, step: int, sizes: SaveSizes, main: bool) -> None:
    """Raise ``OutOfSpace`` from ``err`` if training failed because the filesystem of ``output_dir`` filled up.

    The write that fails is most often a checkpoint (the largest): its incomplete folder is removed, since a resume
    skips it anyway (no ``COMPLETE_MARKER``) and it holds space the user needs back; the line says which checkpoint
    a resume continues. Any other error is left to go on as it is.
    """
    folder = Path(output_dir) / f"{CHECKPOINT_PREFIX}-{step}"
    in_checkpoint = folder.is_dir() and not (folder / COMPLETE_MARKER).exists()
    code = out_of_space(err, folder if in_checkpoint else output_dir, sizes.checkpoint)
    if code is None:
        return
    if in_checkpoint and main:
        shutil.rmtree(folder, ignore_errors=True)
    free = f"{in_words(free_bytes(output_dir))} free there"  # (once the incomplete checkpoint is gone)
    if in_checkpoint:
        what = f"{folder} (a checkpoint of this run takes at least {in_words(sizes.checkpoint)}; {free})"
        removed = f"removed the incomplete {folder.name}; "
    else:
        what, removed = f"{getattr(err, 'filename', None) or output_dir} ({free})", ""
    raise OutOfSpace(f"{described(code)} writing {what}: {removed}{how_to_go_on(output_dir)}") from err


def file_state(path: Path) -> tuple[int, int, int]:
    """What changes when a file (or folder) is written or replaced: its inode, size and modification time."""
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class FinalSave:
    """The final save of a run (``with FinalSave(...): save_model, records, model card``), undone if it fails.

    A failed save once left a ``config.json`` without weights: a rerun took the folder for a finished run and
    refused it, and a user could take it for a model. Now, on any failure (a full disk, Ctrl-C, a bug), the main
    process removes the final model's files (``run_folder.final_model_files``) that this save wrote, and what is
    left of a final model it was replacing (a resume past a finished run's end), since half of one is neither;
    checkpoints and logs stay, for ``--resume_from_checkpoint last``. A full disk becomes ``OutOfSpace``; any other
    error goes on as it was, after a line saying what was removed and how to go on.
    """

    def __init__(self, output_dir: Path, sizes: SaveSizes, main: bool = True) -> None:
        self.output_dir, self.sizes, self.main = Path(output_dir), sizes, main
        self.before: dict[str, tuple[int, int, int]] = {}

    def __enter__(self) -> FinalSave:
        self.before = {p.name: file_state(p) for p in final_model_files(self.output_dir)} if self.main else {}
        return self

    def __exit__(self, kind, err, traceback) -> None:
        if err is None:
            return
        code = out_of_space(err, self.output_dir, self.sizes.final)  # (torch's kind told by the space left: first)
        removed = self.undo() if self.main else []
        state = f"removed what it had written ({', '.join(removed)}); " if removed else ""
        if code is not None:
            raise OutOfSpace(
                f"{described(code)} saving the final model in {self.output_dir} (its weights alone take "
                f"{in_words(self.sizes.final)}; {in_words(free_bytes(self.output_dir))} free there): {state}"
                f"{how_to_go_on(self.output_dir)}"
            ) from err
        if removed:
            say(f"the final save failed: {state}{how_to_go_on(self.output_dir)}")

    def undo(self) -> list[str]:
        """Remove this save's files (and the rest of a final model it overwrote part of); their names."""
        now = {p.name: p for p in final_model_files(self.output_dir)}
        written = [name for name, path in now.items() if self.before.get(name) != file_state(path)]
        replacing = any(name in self.before for name in written) or any(name not in now for name in self.before)
        doomed = sorted(now) if replacing else written
        for name in doomed:
            path = now[name]
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return doomed
