"""What keeps a long run safe: non-finite steps skipped and reported, complete checkpoints only (an old one is
deleted only once a newer one is complete), and a checkpoint on SIGINT / SIGTERM. Saves that fail (a full disk) are
``amapo.train.saving``'s; the output folder itself (one run at a time, overwrite, resume of the same run) is
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
from pathlib import Path

import torch
from transformers import TrainerCallback

from amapo.distributed import true_on_every_rank
from amapo.run_files import COMPLETE_MARKER, checkpoint_folders

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
