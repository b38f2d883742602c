"""What keeps a long run safe: non-finite steps skipped and reported, complete checkpoints only (an old one is
deleted only once a newer one is complete), a checkpoint on SIGINT / SIGTERM, and saves that fail (a full disk)
leave a folder to resume from. The output folder itself (one run at a time, overwrite, resume of the same run) is
``amapo.train.run_folder``'s."""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import shutil
import signal
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from amapo.disk_space import described, free_bytes, in_words, out_of_space
from amapo.distributed import true_on_every_rank
from amapo.errors import UserError
from amapo.hf_internals import CHECKPOINT_PREFIX
from amapo.run_files import COMPLETE_MARKER, checkpoint_folders
from amapo.train.run_folder import final_model_files

logger = logging.getLogger(__name__)

LOSS_STATE_FILE = "loss_state.pt"
NONFINITE_FILE = "nonfinite_steps.jsonl"


class TrainingFailed(RuntimeError):
    """A run that cannot give a trained model (the command line: one line, exit 1, no final model written)."""


class NonFiniteStepError(TrainingFailed):
    """Raised when too many optimizer steps in a row had a non-finite loss or gradient."""


class NoStepTaken(TrainingFailed):
    """Raised when every optimizer step of a run was skipped: the weights are the initial ones."""


class NonFiniteGuard:
    """Skips an optimizer step whose loss or gradients are not finite, and stops after ``limit`` in a row.

    The step's micro-batches note their dataset rows (``note_batch``); a skipped step leaves the weights and
    the optimizer state untouched (its gradients are dropped), is written to ``nonfinite_steps.jsonl`` with
    those rows, and counts towards the limit; a finite step resets the count. The learning-rate schedule
    still advances, so a skipped step is a lost step, not a shifted schedule. ``limit`` 0 never stops.
    """

    def __init__(self, limit: int, log_file: Path) -> None:
        self.limit = limit
        self.log_file = Path(log_file)
        self.consecutive = 0
        self.skipped = 0
        self.attempted = 0  # optimizer steps of this run (this session, if resumed): taken or skipped
        self._rows: list[int] = []
        self._causes: dict[str, list[int]] = {}  # non-finite input or loss term -> the dataset rows it was in
        self._nonfinite_loss = False
        self.tripped = False

    def note_batch(
        self, loss: torch.Tensor, rows: torch.Tensor | None, terms: dict[str, torch.Tensor | None] | None = None
    ) -> None:
        """One micro-batch of the step: its loss, its dataset rows, and its per-pair inputs and loss terms
        (``terms``, named), so that a skipped step can say which of them was not finite, and in which rows."""
        batch_rows = [] if rows is None else [int(r) for r in rows.flatten().tolist()]
        self._rows.extend(batch_rows)
        if torch.isfinite(loss.detach()).all():
            return
        self._nonfinite_loss = True
        named = False
        for name, values in (terms or {}).items():
            if values is None:
                continue
            bad = (~torch.isfinite(values.detach())).reshape(len(values), -1).any(-1).nonzero().flatten().tolist()
            if bad:
                named = True
                self._causes.setdefault(name, []).extend(batch_rows[i] if i < len(batch_rows) else i for i in bad)
        if not named:  # every per-pair term finite, their mean not: the loss as a whole
            self._causes.setdefault("loss", []).extend(batch_rows)

    def wrap(self, optimizer: torch.optim.Optimizer, step_number) -> None:
        """Route ``optimizer.step`` through the check; ``step_number()`` gives the step being taken."""
        original_step = optimizer.step

        def guarded_step(_optimizer, *args, **kwargs):
            # every rank must agree to step or to skip: a sharded optimizer sees only its rank's gradients
            finite = true_on_every_rank(not self._nonfinite_loss and gradients_are_finite(optimizer))
            rows, causes = self._rows, self._causes
            self._rows, self._causes, self._nonfinite_loss = [], {}, False
            if finite:
                self.consecutive = 0
                return original_step(*args, **kwargs)
            optimizer.zero_grad(set_to_none=True)
            self.record(step_number(), rows, causes)
            return None

        # a bound method, as torch's LR schedulers expect when they wrap ``step`` (they re-bind its ``__func__``)
        optimizer.step = types.MethodType(guarded_step, optimizer)

    def skipped_by_engine(self, step: int) -> None:
        """The engine (DeepSpeed) found the step's gradients non-finite and skipped it before the optimizer, and so
        this guard's wrap, saw them: record it as the guard's own skip."""
        rows, causes = self._rows, self._causes
        self._rows, self._causes, self._nonfinite_loss = [], {}, False
        self.record(step, rows, causes)

    def record(self, step: int, rows: list[int], causes: dict[str, list[int]] | None = None) -> None:
        """A skipped step: one line of its own on stderr (what was not finite, in which rows) and one in the log."""
        self.consecutive += 1
        self.skipped += 1
        what = "; ".join(f"{name} in dataset rows {sorted(set(where))}" for name, where in (causes or {}).items())
        what = what or f"gradient (dataset rows {rows})"
        message = f"step {step} skipped, the weights not updated: non-finite {what}"
        if self.limit:
            message += f" ({self.consecutive} in a row; the run stops at {self.limit})"
        say(message)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a") as f:
            record = {"step": step, "rows": rows, "consecutive": self.consecutive, "non_finite": causes or {}}
            f.write(json.dumps(record) + "\n")
        if self.limit and self.consecutive >= self.limit:
            self.tripped = True

    def check_some_step_taken(self) -> None:
        """A run whose every optimizer step was skipped trained nothing: an error, before a model is saved."""
        if self.attempted and self.skipped >= self.attempted:
            raise NoStepTaken(
                f"every one of the {self.attempted} optimizer steps had a non-finite loss or gradient and was "
                f"skipped (rows in {self.log_file}): the weights are the initial ones, no model was saved"
            )


def say(message: str) -> None:
    """One line of its own on stderr, above any progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(f"amapo: {message}", file=sys.stderr)


def gradients_are_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether this rank's gradients are all finite (of a sharded optimizer, FSDP2 or DeepSpeed ZeRO: its shards)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grads = [g.to_local() if hasattr(g, "to_local") else g for g in grads]  # an FSDP2 DTensor: this rank's shard
    if not grads:
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())  # one device sync, not one per tensor


class EngineSkipCallback(TrainerCallback):
    """DeepSpeed checks the gradients itself and skips a non-finite step without calling the optimizer, so the
    guard's wrap never sees it (and would take its rows and flag for the next, finite step). After each step this
    reads the engine's count of skipped steps and hands a new one to the guard."""

    def __init__(self, guard: NonFiniteGuard, engine) -> None:
        self.guard, self.engine = guard, engine  # engine(): the DeepSpeed engine once the Trainer has built it
        self.seen = 0

    def on_step_end(self, args, state, control, **kwargs):
        skipped = getattr(self.engine(), "skipped_steps", 0)
        if skipped > self.seen:
            self.guard.skipped_by_engine(state.global_step)
        self.seen = skipped


class NonFiniteStopCallback(TrainerCallback):
    """Stop training once the guard has seen too many non-finite steps in a row."""

    def __init__(self, guard: NonFiniteGuard) -> None:
        self.guard = guard

    def on_step_end(self, args, state, control, **kwargs):
        self.guard.attempted += 1
        if self.guard.tripped:
            control.should_training_stop = True
            control.should_save = False  # the last good checkpoint stays the last checkpoint


class InterruptCallback(TrainerCallback):
    """On SIGINT or SIGTERM, finish the current step, save a checkpoint, and stop.

    The handlers are installed for the duration of training only (``install`` / ``restore``).
    """

    def __init__(self) -> None:
        self.signal_received: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signal_received is not None:  # a second signal: stop now, as the user insists
            raise KeyboardInterrupt
        self.signal_received = signum
        logger.warning("received %s: saving a checkpoint after this step, then stopping", signal.Signals(signum).name)

    def on_step_end(self, args, state, control, **kwargs):
        if self.signal_received is not None:
            control.should_save = True
            control.should_training_stop = True


class CheckpointStateCallback(TrainerCallback):
    """Restore the loss's own state (alpha-DPO's running statistics) from the checkpoint a run resumes.

    The state is saved with each checkpoint by ``mark_checkpoint_complete``, which ``PreferenceTrainer`` calls
    when it writes one (before old checkpoints are rotated away, which happens before any ``on_save``).
    """

    def __init__(self, loss_fn: torch.nn.Module) -> None:
        self.loss_fn = loss_fn

    def restore(self, checkpoint: str | None) -> None:
        path = Path(checkpoint) / LOSS_STATE_FILE if checkpoint else None
        if path is not None and path.exists():
            self.loss_fn.load_state_dict(torch.load(path, weights_only=True))


class ResumeNote(TrainerCallback):
    """One line, on the main process, when training continues a checkpoint: which one, and where in the run."""

    def __init__(self, checkpoint: str | None) -> None:
        self.checkpoint = checkpoint

    def on_train_begin(self, args, state, control, **kwargs):
        if self.checkpoint is not None and state.is_world_process_zero:  # (the checkpoint's state is loaded by now)
            say(f"resuming from {self.checkpoint} (step {state.global_step} of {state.max_steps})")


class TiedWeightsFilter(logging.Filter):
    """Drops the Trainer's "There were missing keys in the checkpoint model loaded: ['lm_head.weight']" on a resume
    when every missing key is a tied weight (the built-in tiny-llama ties its LM head to its input embeddings).

    ``save_pretrained`` writes a shared tensor once, under one of its names; the Trainer's resume loads that state
    dict with ``strict=False`` and names the other missing, though the weight is loaded through the first (its own
    check for this knows only ``_keys_to_ignore_on_save``, which transformers 5 no longer sets for tied weights).
    Any other missing key is still reported.
    """

    MISSING = "There were missing keys in the checkpoint model loaded: "

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        shared: dict[int, list[str]] = {}
        for name, parameter in model.named_parameters(remove_duplicate=False):
            shared.setdefault(id(parameter), []).append(name)
        self.tied = {name: set(names) for names in shared.values() if len(names) > 1 for name in names}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.MISSING):
            return True
        try:
            missing = set(ast.literal_eval(message.removeprefix(self.MISSING).rstrip(".")))
        except (ValueError, SyntaxError, TypeError):
            return True
        loaded_through_another = all(key in self.tied and not self.tied[key] <= missing for key in missing)
        return not loaded_through_another


@contextlib.contextmanager
def tied_weights_not_reported_missing(model: torch.nn.Module):
    """``TiedWeightsFilter`` on transformers' Trainer logger for the ``with`` block."""
    trainer_logger = logging.getLogger("transformers.trainer")
    quiet = TiedWeightsFilter(model)
    trainer_logger.addFilter(quiet)
    try:
        yield
    finally:
        trainer_logger.removeFilter(quiet)


def mark_checkpoint_complete(folder: Path, loss_fn: torch.nn.Module) -> None:
    """Save the loss's state in a checkpoint the Trainer has written, then mark it complete.

    The marker is written last, so a checkpoint interrupted while being written has none and is never resumed
    from (``last_complete_checkpoint``) nor kept in place of a complete one (``rotate_checkpoints``).
    """
    if loss_fn.state_dict():
        torch.save(loss_fn.state_dict(), folder / LOSS_STATE_FILE)
    (folder / COMPLETE_MARKER).write_text("ok\n")


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The highest-numbered checkpoint that was completely written, skipping any interrupted one."""
    complete = []
    for _, folder, is_complete in checkpoint_folders(output_dir):
        if is_complete:
            complete.append(folder)
        else:
            logger.warning("ignoring incomplete checkpoint %s (interrupted while being written)", folder)
    return complete[-1] if complete else None


def rotate_checkpoints(output_dir: Path, limit: int | None, newest: Path, keep: Path | str | None = None) -> None:
    """Keep at most ``limit`` checkpoints: delete incomplete ones first, then the oldest complete ones.

    ``newest`` (the complete checkpoint just written) and ``keep`` (the best one, with ``load_best_model_at_end``)
    are never deleted. Called only once ``newest`` is complete, so a kill at any moment leaves a complete checkpoint.
    """
    if not limit or limit <= 0:
        return
    folders = checkpoint_folders(output_dir)
    protected = {Path(newest).resolve()} | ({Path(keep).resolve()} if keep else set())
    candidates = [f for _, f, complete in folders if not complete] + [f for _, f, complete in folders if complete]
    remaining = len(folders)
    for folder in candidates:
        if remaining <= max(limit, len(protected)):
            break
        if folder.resolve() not in protected:
            logger.info("deleting checkpoint %s (save_total_limit %d)", folder, limit)
            shutil.rmtree(folder, ignore_errors=True)
            remaining -= 1


# --- saves that fail ----------------------------------------------------------------------------------------------


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
