"""Trainer callbacks: metrics to a JSONL file, a progress bar that shows the live loss and ranking accuracy,
and the loss's own state (alpha-DPO's running statistics) saved with every checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

LOSS_STATE_FILE = "loss_state.pt"


class JsonlMetricsCallback(TrainerCallback):
    """Append every log (train and eval) as one JSON line with its step to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class LiveProgressCallback(ProgressCallback):
    """tqdm bar whose postfix shows the last logged loss and ranking accuracy, instead of printing each log."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs or "loss" not in logs:
            return
        postfix = {"loss": f"{logs['loss']:.4f}"}
        if "rewards/accuracies" in logs:
            postfix["acc"] = f"{logs['rewards/accuracies']:.3f}"
        if "margin/mean" in logs:
            postfix["margin"] = f"{logs['margin/mean']:.3f}"
        self.training_bar.set_postfix(postfix, refresh=False)


class LossStateCallback(TrainerCallback):
    """Save the loss module's buffers in each checkpoint and restore them on resume."""

    def __init__(self, loss_fn: torch.nn.Module) -> None:
        self.loss_fn = loss_fn

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.loss_fn.state_dict():
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            torch.save(self.loss_fn.state_dict(), folder / LOSS_STATE_FILE)

    def restore(self, checkpoint: str | None) -> None:
        path = Path(checkpoint) / LOSS_STATE_FILE if checkpoint else None
        if path is not None and path.exists():
            self.loss_fn.load_state_dict(torch.load(path, weights_only=True))
