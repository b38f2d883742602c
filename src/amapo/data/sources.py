"""Where data comes from: local paths told apart from Hub ids, and the NAME=SOURCE@SPLIT of named sets.

Torch-free: the command line checks these before anything heavy loads.
"""

from __future__ import annotations

from pathlib import Path

from amapo.builtin import is_builtin
from amapo.errors import UserError

DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")


def looks_local(value: str, data: bool = False) -> bool:
    """Clearly a local path (not a Hub id): "./x", "/x", "~/x", "../x", or, for data, a file name like "x.jsonl"."""
    if value.startswith(("/", "./", "../", "~", ".\\")):
        return True
    name = value.split("@")[0].lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".xz")
    return data and name.endswith(DATA_SUFFIXES)


def check_local_path(option: str, value: str | None, data: bool = False) -> None:
    """A value that is clearly a local path must exist: a one-line error, not a Hub lookup that fails later."""
    if value and not is_builtin(value) and looks_local(value, data) and not Path(value).expanduser().exists():
        raise UserError(f"--{option}: no such file or folder {value} (looked in {Path(value).expanduser().absolute()})")


def parse_named_set(entry: str) -> tuple[str, str, str]:
    """(name, source, split) of 'NAME=SOURCE' or 'NAME=SOURCE@SPLIT' (split default: train)."""
    name, _, source = entry.partition("=")
    source, _, split = source.partition("@")
    return name, source, split or "train"
