"""One run per output folder: a lock while a run writes there, ``--overwrite_output_dir`` that removes the previous
run before the new one starts, and a resume only from a checkpoint written with this run's options, trained on
this run's data.

Without these, two runs on one folder both finished with interleaved metrics, and an overwritten folder kept the
old run's metrics and checkpoints, which a later ``--resume_from_checkpoint last`` then silently resumed.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import json
import os
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from amapo.errors import UserError
from amapo.hf_internals import CHECKPOINT_PREFIX
from amapo.output_folder import check_writable_folder
from amapo.run_files import CONFIG_FILE, checkpoint_folders
from amapo.train.fingerprint import read_data_record
from amapo.train.report import resolved_config

if TYPE_CHECKING:
    from amapo.train.config import TrainConfig

LOCK_FILE = "amapo.lock"

# What a run leaves in its output folder: amapo's records, what save_model writes (weights, their index and
# shards, model and tokenizer files, training_args.bin), checkpoints, TensorBoard's runs/, and the reports of
# `amapo eval` and `amapo analyze` on that model. --overwrite_output_dir removes these and nothing else: a user's
# own files (notes, the recipe `amapo compare` writes there) stay. README.md only when it is a model card.
RUN_FILES = (
    CONFIG_FILE,
    "results.json",
    "metrics.jsonl",
    "nonfinite_steps.jsonl",
    "README.md",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model*.bin.index.json",
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "training_args.bin",
    "trainer_state.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    f"{CHECKPOINT_PREFIX}-*",
    "runs",
    "eval",
    "analysis",
)

# Options that change how a run is recorded, saved, evaluated or fits in memory, not what it trains: a resumed
# run may change them. num_train_epochs and max_steps too, since extending a run past its old end is a
# legitimate resume; max_nonfinite_steps, so a run stopped by bad steps can go on with a looser limit.
RESUME_MAY_CHANGE = (
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "num_train_epochs",
    "max_steps",
    "max_nonfinite_steps",
    "logging_*",
    "log_level*",
    "log_on_each_node",
    "save_*",
    "eval_*",
    "per_device_eval_batch_size",
    "report_to",
    "run_name",
    "project",
    "trackio_*",
    "push_to_hub*",
    "hub_*",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "dataset_num_proc",
    "disable_tqdm",
    "skip_memory_metrics",
    "ddp_timeout",
)


def note(message: str) -> None:
    """One line on stderr for something the user should know but need not fix."""
    print(f"amapo: {message}", file=sys.stderr, flush=True)


# --- the lock ---------------------------------------------------------------------------------------------------


class RunLock:
    """``<output_dir>/amapo.lock`` while a run writes in ``output_dir``; a second live run there is refused.

    The lock is a JSON file (pid, host, start time in UTC, command line) created atomically (``O_CREAT|O_EXCL``).
    A lock whose process has ended (same host, pid gone) is taken over with a note; one from another host cannot
    be checked and is refused, naming the file to delete if that run is gone. The lock is removed when the
    ``with`` block ends, normally or by an exception; after a SIGKILL it stays, and the next run takes it over.
    Only the main process holds it (``held=False`` on the other ranks of a distributed run).
    """

    def __init__(self, output_dir: Path, held: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        self.held = held
        self.record: dict | None = None
        self._created_folder = False

    def __enter__(self) -> RunLock:
        if self.held:
            self._created_folder = not self.output_dir.exists()
            self.output_dir.mkdir(parents=True, exist_ok=True)
            try:
                self.acquire()
            except BaseException:
                self._remove_folder_if_empty()
                raise
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            self.release()

    def acquire(self) -> None:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": shlex.join(sys.argv),
        }
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.read_holder()
                if holder is not None:
                    self.refuse_unless_stale(holder)
                    self.take_over(holder)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self.record = record
            return

    def read_holder(self) -> dict | None:
        """The lock's record (None if it was released meanwhile); a lock another run has just created may not be
        written yet, so an unreadable one gets a moment before it is refused."""
        for _ in range(20):
            if not self.path.exists():
                return None
            holder = read_json(self.path)
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int) and "host" in holder:
                return holder
            time.sleep(0.1)
        raise UserError(
            f"{self.path} is not a lock amapo can read: if no run is writing to {self.output_dir}, delete that file"
        )

    def refuse_unless_stale(self, holder: dict) -> None:
        pid, host, started = holder["pid"], holder["host"], holder.get("started", "?")
        if host != socket.gethostname():
            raise UserError(
                f"{self.output_dir} is in use by a run on another machine (pid {pid} on {host}, started {started}), "
                f"which cannot be checked from here: choose another --output_dir, wait for that run to end, or, "
                f"if it is gone, delete {self.path}"
            )
        if process_is_running(pid):
            raise UserError(
                f"{self.output_dir} is in use by another run (pid {pid} on {host}, started {started}): choose "
                "another --output_dir, or wait for that run to end"
            )

    def take_over(self, holder: dict) -> None:
        """Remove the stale lock ``holder``, unless another run has replaced it since it was read.

        Moving the lock aside is atomic, so of two runs taking over at once only one moves the stale lock; the
        other, finding it moved the winner's fresh lock instead, puts that back and is then refused.
        """
        aside = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if read_json(aside) != holder:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink()
            return
        aside.unlink()
        note(
            f"took over the lock of run pid {holder['pid']} ({holder['host']}, started {holder.get('started', '?')}),"
            " which is no longer running"
        )

    def release(self) -> None:
        if self.record is not None and read_json(self.path) == self.record:  # never another run's lock
            self.path.unlink(missing_ok=True)
        self._remove_folder_if_empty()

    def _remove_folder_if_empty(self) -> None:
        """A run refused before it wrote anything leaves no empty folder behind."""
        if self._created_folder and self.output_dir.is_dir() and not any(self.output_dir.iterdir()):
            self.output_dir.rmdir()


def read_json(path: Path):
    """The JSON in ``path``, or None if it is missing or not (yet) complete JSON."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def process_is_running(pid: int) -> bool:
    if pid <= 0:  # os.kill would signal a process group
        return False
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


# --- the previous run -------------------------------------------------------------------------------------------


def previous_run_files(output_dir: Path) -> list[Path]:
    """What an earlier run left in ``output_dir`` (``RUN_FILES``): checkpoints by step, then the rest by name."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in RUN_FILES):
            continue
        if path.name.startswith(f"{CHECKPOINT_PREFIX}-") and not checkpoint_step(path.name).isdigit():
            continue
        if path.name == "README.md" and not is_model_card(path):
            continue
        found.append(path)
    checkpoints = sorted(
        (p for p in found if p.name.startswith(CHECKPOINT_PREFIX)), key=lambda p: int(checkpoint_step(p.name))
    )
    return checkpoints + sorted(p for p in found if p not in checkpoints)


def checkpoint_step(name: str) -> str:
    return name.removeprefix(f"{CHECKPOINT_PREFIX}-")


def is_model_card(path: Path) -> bool:
    """A model card (amapo's, or the one PEFT writes beside an adapter) starts with YAML front matter."""
    with path.open(errors="replace") as f:
        return f.read(4) == "---\n"


def holds_a_run(output_dir: Path) -> bool:
    """Whether ``output_dir`` holds what a run writes (``RUN_FILES``). The lock alone is not a run: whether the run
    that holds it still writes there is ``RunLock``'s question."""
    return bool(previous_run_files(output_dir))


def remove_previous_run(output_dir: Path) -> list[str]:
    """Remove what an earlier run left in ``output_dir`` (``--overwrite_output_dir``), and say so in one line."""
    paths = previous_run_files(output_dir)
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    names = [p.name for p in paths]
    if names:
        note(f"--overwrite_output_dir: removed the previous run in {output_dir} ({', '.join(names)})")
    return names


# The run files the final save does not write: checkpoints, the logs, TensorBoard's and later commands' reports.
NOT_FINAL_MODEL = (f"{CHECKPOINT_PREFIX}-*", "metrics.jsonl", "nonfinite_steps.jsonl", "runs", "eval", "analysis")


def final_model_files(output_dir: Path) -> list[Path]:
    """The final model's files in ``output_dir``: what a run's final save writes there (weights, model and tokenizer
    files, ``training_args.bin``, amapo's config and results, the model card), i.e. ``RUN_FILES`` less
    ``NOT_FINAL_MODEL``. A failed final save removes these (``train.saving.FinalSave``)."""
    return [p for p in previous_run_files(output_dir) if not any(fnmatch.fnmatch(p.name, x) for x in NOT_FINAL_MODEL)]


# --- resuming ---------------------------------------------------------------------------------------------------


def check_resumable(checkpoint: Path, config: TrainConfig, warn: bool = True) -> None:
    """Refuse to resume ``checkpoint`` with options that change what is trained (all but ``RESUME_MAY_CHANGE``).

    A checkpoint records its run's options (``CONFIG_FILE``, written when it is saved); one from before amapo
    did so resumes, with a warning.
    """
    saved_file = Path(checkpoint) / CONFIG_FILE
    if not saved_file.exists():
        if warn:
            note(f"{checkpoint} has no record of its options (an older checkpoint): resuming without checking them")
        return
    saved, current = yaml.safe_load(saved_file.read_text()) or {}, resolved_config(config)
    changed = [
        key
        for key in sorted(saved.keys() & current.keys())
        if saved[key] != current[key] and not any(fnmatch.fnmatch(key, p) for p in RESUME_MAY_CHANGE)
    ]
    if changed:
        before = ", ".join(f"{key}={option_value(saved[key])}" for key in changed)
        now = ", ".join(f"{key}={option_value(current[key])}" for key in changed)
        raise UserError(
            f"{checkpoint} was written with {before}; this run has {now}: resume with the same options, or start "
            "over with --overwrite_output_dir true"
        )


def option_value(value) -> str:
    """An option's value as a message shows it: an unset option as "unset", not Python's None."""
    return "unset" if value is None else repr(value)


def check_resumed_data(checkpoint: Path, trained_on: dict, warn: bool = True) -> None:
    """Refuse to resume ``checkpoint`` on training rows other than its own: the same ``--dataset`` whose content
    changed would make one run of two datasets. ``trained_on`` is this run's ``fingerprint.data_record``, compared
    with the one the checkpoint recorded (``DATA_FILE``); a checkpoint from before amapo recorded it resumes with a
    note. Called once the split is tokenized (the fingerprint needs its rows) and before the model loads."""
    saved = read_data_record(checkpoint)
    if saved is None:
        if warn:
            note(f"{checkpoint} has no record of its training data (an older checkpoint): resuming without checking "
                 "that the data is the same")  # fmt: skip
        return
    if saved["sha256"] != trained_on["sha256"]:
        source = f"{saved.get('dataset', trained_on['dataset'])}@{saved.get('split', trained_on['split'])}"
        rows = trained_on["rows"]
        rows = "" if saved.get("rows") == rows else f", {saved.get('rows')} rows then, {rows} now"
        raise UserError(
            f"{checkpoint} was trained on other data: {source} changed since (fingerprint {saved['sha256'][:12]} != "
            f"{trained_on['sha256'][:12]}{rows}): resume with the data it was trained on, or start over with "
            "--overwrite_output_dir true"
        )


def check_output_dir(output_dir: Path, overwrite: bool, resume: str | None) -> None:
    """The folder either holds no run, or the options say what to do with it (start over, or resume)."""
    if resume in ("", "false", "False"):
        resume = None
    if resume is not None and overwrite:
        raise UserError(
            f"--overwrite_output_dir true starts the run over and --resume_from_checkpoint {resume} continues it: "
            "give one of them"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file, not a folder: choose another --output_dir (the file "
                        "is left as it is)")  # fmt: skip
    check_writable_folder(output_dir, "--output_dir")  # (not created here: a refused run leaves no folder)
    if resume is None and not overwrite and holds_a_run(output_dir):
        ways = ["choose another --output_dir"]
        if any(complete for *_, complete in checkpoint_folders(output_dir)):  # only a hint that works in this state
            ways.append("resume it with --resume_from_checkpoint last")
        finished = (output_dir / "results.json").is_file()
        raise UserError(
            f"{output_dir} already holds a {'finished ' if finished else ''}run: {', '.join(ways)}, or pass "
            "--overwrite_output_dir true"
        )
