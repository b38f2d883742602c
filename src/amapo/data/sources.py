"""Where data comes from: local paths told apart from Hub ids, and the NAME=SOURCE@SPLIT of named sets.

Torch-free: the command line checks these before anything heavy loads.
"""

from __future__ import annotations

import os
from pathlib import Path

from amapo.builtin import is_builtin
from amapo.errors import UserError

DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
PARQUET_MAGIC = b"PAR1"  # a Parquet file begins and ends with it


def data_suffix(path: Path) -> str | None:
    """The data format suffix of ``path`` (".jsonl" for "x.jsonl.gz"), or None if it is not one amapo reads."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes and suffixes[-1] in DATA_SUFFIXES else None


def looks_local(value: str, data: bool = False) -> bool:
    """Clearly a local path (not a Hub id): "./x", "/x", "~/x", "../x", or, for data, a file name like "x.jsonl"."""
    if value.startswith(("/", "./", "../", "~", ".\\")):
        return True
    name = value.split("@")[0].lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".xz")
    return data and name.endswith(DATA_SUFFIXES)


def check_local_path(option: str, value: str | None, data: bool = False) -> None:
    """A value that is clearly a local path must exist: a one-line error, not a Hub lookup that fails later. With
    ``data``, a local file or folder (however it is spelt) must also hold data amapo can read (``check_data_files``).
    """
    if not value or is_builtin(value):
        return
    path = Path(value).expanduser()
    if looks_local(value, data) and not path.exists():
        raise UserError(f"--{option}: no such file or folder {value} (looked in {path.absolute()})")
    if data and path.exists():
        check_data_files(f"--{option}", path)


def check_data_files(label: str, path: Path) -> None:
    """A local dataset is a readable data file, or a folder holding some (of one format): checked by kind and by
    their first bytes, so a Parquet file holding JSON or an empty folder is one line now, not a traceback from
    the reader after the model has loaded. JSON rows are checked row by row elsewhere (``amapo.data.precheck``).
    ``label`` starts the message (the option, or the set); "" for none.
    """
    start = f"{label}: " if label else ""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and data_suffix(p) and not p.name.startswith("."))
        if not files:
            raise UserError(f"{start}the folder {path} holds no data file ({', '.join(DATA_SUFFIXES)})")
        formats = sorted({data_suffix(p).replace(".jsonl", ".json") for p in files})
        if len(formats) > 1:
            raise UserError(f"{start}the folder {path} mixes formats ({', '.join(formats)}): keep one per folder")
        for file in files:
            check_data_file(label, file)
        return
    check_data_file(label, path)


def check_data_file(label: str, path: Path) -> None:
    """One data file: a kind amapo reads, readable, not empty, and for Parquet the Parquet magic at both ends."""
    start = f"{label}: " if label else ""
    if not path.is_file():
        raise UserError(f"{start}{path} is not a file or folder amapo can read")
    suffix = data_suffix(path)
    if suffix is None:
        known = ", ".join(DATA_SUFFIXES)
        raise UserError(f"{start}{path.name} is not a data file amapo reads (its suffix must be {known}, "
                        f"optionally {', '.join(COMPRESSION_SUFFIXES)})")  # fmt: skip
    if not os.access(path, os.R_OK):
        raise UserError(f"{start}cannot read {path} (permission denied)")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{start}{path} is empty")
    if suffix == ".parquet" and path.suffix.lower() not in COMPRESSION_SUFFIXES:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
        if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
            looks = " (it begins like JSON: name it .jsonl or .json)" if head.lstrip()[:1] in (b"{", b"[") else ""
            raise UserError(f"{start}{path} is not a Parquet file: it does not begin and end with PAR1{looks}")


def parse_named_set(entry: str) -> tuple[str, str, str]:
    """(name, source, split) of 'NAME=SOURCE' or 'NAME=SOURCE@SPLIT' (split default: train)."""
    name, _, source = entry.partition("=")
    source, _, split = source.partition("@")
    return name, source, split or "train"


def check_named_set(option: str, entry: str, example: str = "held=./held.jsonl@train") -> tuple[str, str, str]:
    """``parse_named_set`` of an entry that has a name and a source: "x=" (an empty path, which a reader would take
    for the current folder) or "=data.jsonl" is one line naming the option."""
    name, source, split = parse_named_set(entry)
    if "=" not in entry or not name.strip() or not source.strip():
        raise UserError(f"--{option} entries must be NAME=SOURCE[@SPLIT] (e.g. {example}), got {entry!r}")
    return name, source, split
