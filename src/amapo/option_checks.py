"""Checks of command-line options that need nothing loaded: numbers, model paths, dataset paths, token limits, method
names, shared by ``amapo eval``, ``analyze``, ``compare``, ``generate`` and ``make-pairs``.

Each names its option with the leading ``--`` and raises ``UserError``, so a mistake is one line before a model, a
tokenizer or a dataset loads (a bug elsewhere keeps its traceback). A library module (it stands on ``amapo.data``,
``amapo.builtin`` and ``amapo.losses`` only), so every command checks its options the same way without importing
another command's package.
"""

from __future__ import annotations

import math
from pathlib import Path

from amapo.builtin import is_builtin
from amapo.data.sources import check_data_files, check_local_path, looks_local
from amapo.data.truncation import TRUNCATION_MODES
from amapo.errors import UserError

MODEL_FILES = ("config.json", "adapter_config.json")  # a model folder, or a LoRA adapter folder


def check_number(option: str, value: float | None, rule: str) -> None:
    """``value`` (None: not given) is finite and meets ``rule``, one of '> 0', '>= 0', '>= 1'."""
    if value is None:
        return
    if not math.isfinite(value):
        raise UserError(f"--{option} must be a finite number {rule}, got {value}")
    low = float(rule.split()[1])
    if value < low or (rule.startswith("> ") and value == low):
        raise UserError(f"--{option} must be {rule}, got {value}")


def check_model_path(option: str, value: str | None) -> None:
    """A clearly local model path exists and holds a model (a Hub id or ``builtin:`` name is left to loading)."""
    check_local_path(option, value)
    if not value or is_builtin(value):
        return
    folder = Path(value).expanduser()
    if folder.is_dir() and not any((folder / name).exists() for name in MODEL_FILES):
        raise UserError(
            f"--{option}: {value} holds no model (no config.json): give an `amapo train` output folder, a "
            "checkpoint-* folder or a Hub id"
        )


def check_limits(max_length: int, max_prompt_length: int, truncation_mode: str, origin: str) -> None:
    """The token limits a set is cut to work together; ``origin`` says where the values came from."""
    if truncation_mode not in TRUNCATION_MODES:
        raise UserError(f"--truncation_mode must be one of {', '.join(TRUNCATION_MODES)}, got {truncation_mode!r}")
    if not max_prompt_length < max_length:
        raise UserError(
            f"need --max_prompt_length < --max_length, got max_prompt_length={max_prompt_length}, "
            f"max_length={max_length} ({origin})"
        )


def check_data_path(label: str, source: str) -> None:
    """A clearly local dataset (a path, or a file name such as pairs.jsonl) exists, and a local one holds data
    amapo reads (``check_data_files``); ``label`` names the set."""
    if is_builtin(source):
        return
    path = Path(source).expanduser()
    if looks_local(source, data=True) and not path.exists():
        raise UserError(f"{label}: no such file or folder {source} (looked in {path.absolute()})")
    if path.exists():
        check_data_files(label, path)


def check_method(option: str, name: str) -> None:
    """``name`` is a registered method (the error lists the known ones)."""
    from amapo.losses import loss_spec

    try:
        loss_spec(name)
    except ValueError as err:
        raise UserError(f"--{option}: {err}") from None
