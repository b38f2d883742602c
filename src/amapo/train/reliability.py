"""What keeps a long run safe: non-finite steps skipped and reported, complete checkpoints only, a checkpoint on
SIGINT / SIGTERM, and no silent overwrite of a finished run."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "amapo_checkpoint_complete"
LOSS_STATE_FILE = "loss_state.pt"
NONFINITE_FILE = "nonfinite_steps.jsonl"


class NonFiniteStepError(RuntimeError):
    """Raised when too many optimizer steps in a row had a non-finite loss or gradient."""


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
        self._rows: list[int] = []
        self._nonfinite_loss = False
        self.tripped = False

    def note_batch(self, loss: torch.Tensor, rows: torch.Tensor | None) -> None:
        if rows is not None:
            self._rows.extend(int(r) for r in rows.flatten().tolist())
        if not torch.isfinite(loss.detach()).all():
            self._nonfinite_loss = True

    def wrap(self, optimizer: torch.optim.Optimizer, step_number) -> None:
        """Route ``optimizer.step`` through the check; ``step_number()`` gives the step being taken."""
        original_step = optimizer.step

        def guarded_step(*args, **kwargs):
            finite = not self._nonfinite_loss and gradients_are_finite(optimizer)
            rows, self._rows, self._nonfinite_loss = self._rows, [], False
            if finite:
                self.consecutive = 0
                return original_step(*args, **kwargs)
            optimizer.zero_grad(set_to_none=True)
            self.record(step_number(), rows)
            return None

        optimizer.step = guarded_step

    def record(self, step: int, rows: list[int]) -> None:
        self.consecutive += 1
        self.skipped += 1
        logger.warning("step %d: non-finite loss or gradient, step skipped (dataset rows %s)", step, rows)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a") as f:
            f.write(json.dumps({"step": step, "rows": rows, "consecutive": self.consecutive}) + "\n")
        if self.limit and self.consecutive >= self.limit:
            self.tripped = True


def gradients_are_finite(optimizer: torch.optim.Optimizer) -> bool:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


class NonFiniteStopCallback(TrainerCallback):
    """Stop training once the guard has seen too many non-finite steps in a row."""

    def __init__(self, guard: NonFiniteGuard) -> None:
        self.guard = guard

    def on_step_end(self, args, state, control, **kwargs):
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
    """Save the loss's own state (alpha-DPO's running statistics) in each checkpoint, then mark it complete.

    The marker is written last, so a checkpoint interrupted while being written has none and is never resumed
    from (``last_complete_checkpoint``); the previous checkpoint stays intact.
    """

    def __init__(self, loss_fn: torch.nn.Module) -> None:
        self.loss_fn = loss_fn

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if not folder.is_dir():
            return
        if self.loss_fn.state_dict():
            torch.save(self.loss_fn.state_dict(), folder / LOSS_STATE_FILE)
        (folder / COMPLETE_MARKER).write_text("ok\n")

    def restore(self, checkpoint: str | None) -> None:
        path = Path(checkpoint) / LOSS_STATE_FILE if checkpoint else None
        if path is not None and path.exists():
            self.loss_fn.load_state_dict(torch.load(path, weights_only=True))


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The highest-numbered checkpoint that was completely written, skipping any interrupted one."""
    candidates = []
    for folder in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        number = folder.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if folder.is_dir() and number.isdigit():
            if (folder / COMPLETE_MARKER).exists():
                candidates.append((int(number), folder))
            else:
                logger.warning("ignoring incomplete checkpoint %s (interrupted while being written)", folder)
    return max(candidates)[1] if candidates else None


def holds_a_run(output_dir: Path) -> bool:
    """Whether ``output_dir`` already holds an amapo run (its config, a model, or checkpoints)."""
    path = Path(output_dir)
    if not path.is_dir():
        return False
    markers = ("amapo_config.yaml", "model.safetensors", "adapter_model.safetensors", "metrics.jsonl")
    return any((path / m).exists() for m in markers) or any(path.glob(f"{PREFIX_CHECKPOINT_DIR}-*"))
