"""Trainer callbacks: metrics to a JSONL file, a progress bar that shows the live loss and ranking accuracy, and
checkpoint weights readable as the umask says."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from amapo.hf_internals import CHECKPOINT_PREFIX, progress_bar
from amapo.train.report import fix_saved_file_modes


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
        bar = progress_bar(self)
        if not state.is_world_process_zero or bar is None or not logs or "loss" not in logs:
            return
        postfix = {"loss": f"{logs['loss']:.4f}"}
        if "rewards/accuracies" in logs:
            postfix["acc"] = f"{logs['rewards/accuracies']:.3f}"
        if "margin/mean" in logs:
            postfix["margin"] = f"{logs['margin/mean']:.3f}"
        bar.set_postfix(postfix, refresh=False)


class SavedFileModesCallback(TrainerCallback):
    """After each checkpoint save, give its ``*.safetensors`` the umask's mode (``report.fix_saved_file_modes``:
    safetensors writes them 0o600)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            fix_saved_file_modes(Path(args.output_dir) / f"{CHECKPOINT_PREFIX}-{state.global_step}")
