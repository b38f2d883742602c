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
BOM = b"\xef\xbb\xbf"
PARQUET_MAGIC = b"PAR1"  # a Parquet file begins and ends with it
# The first bytes every stream of each compression begins with (gzip: RFC 1952; bz2: "BZh" + block size; xz: its
# format spec's header magic; zstd: RFC 8878's frame magic, 0xFD2FB528 little-endian).
COMPRESSION_MAGIC = {".gz": b"\x1f\x8b", ".bz2": b"BZh", ".xz": b"\xfd7zXZ\x00", ".zst": b"\x28\xb5\x2f\xfd"}
COMPRESSION_NAMES = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
OTHER_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}  # what a CSV saved by other tools is separated by


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
    name = value.split("@")[0].lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
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
    """One data file: a kind amapo reads, readable, not empty, for Parquet the Parquet magic at both ends, and for a
    compressed file the magic of its compression first (``check_compressed``)."""
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
    if path.suffix.lower() in COMPRESSION_SUFFIXES:
        check_compressed(start, path)
    if suffix == ".csv":
        check_csv_header(start, path)
    if suffix == ".parquet" and path.suffix.lower() not in COMPRESSION_SUFFIXES:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
        if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
            looks = " (it begins like JSON: name it .jsonl or .json)" if head.lstrip()[:1] in (b"{", b"[") else ""
            raise UserError(f"{start}{path} is not a Parquet file: it does not begin and end with PAR1{looks}")


def check_compressed(start: str, path: Path) -> None:
    """A ``.gz`` / ``.bz2`` / ``.xz`` / ``.zst`` file begins with its compression's magic (``COMPRESSION_MAGIC``):
    else one line saying what it begins like and the fix (a plain file with the suffix added, or another
    compression's file misnamed), not the decompressor's traceback after the model has loaded. A ``.zst`` file also
    needs a zstd module where the readers look for one (``zstd_readable``). A stream cut short or corrupt past its
    first bytes is found where it is read (``amapo.data.reading``, ``amapo.data.loading``)."""
    compression = path.suffix.lower()
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(COMPRESSION_MAGIC[compression]):
        name = COMPRESSION_NAMES[compression]
        raise UserError(f"{start}{path} is not {name}-compressed: it {begins_like(head, path)}")
    if compression == ".zst" and not zstd_readable():
        raise UserError(f"{start}{path} is zstd-compressed, and reading it needs the zstandard package: pip install "
                        "zstandard (or decompress it: zstd -d)")  # fmt: skip


def check_csv_header(start: str, path: Path) -> None:
    """A CSV whose header, read with commas as ``datasets`` reads it, is one column holding ';', tabs or '|' was
    saved with another separator: one line naming it, since no --column_mapping can split that column."""
    import csv

    from amapo.data.reading import DECOMPRESSION_ERRORS, OPENERS, DecompressionFailed

    opener = OPENERS.get(path.suffix.lower(), open) if path.suffix.lower() != ".zst" else None
    if opener is None:  # zstd: read by ``datasets`` alone (zstandard), its header unread here
        return
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
            header = next(csv.reader(f), [])
    except DECOMPRESSION_ERRORS as err:
        if path.suffix.lower() not in OPENERS:
            raise
        raise DecompressionFailed(path.name, err, 0) from None
    hint = separator_hint(header)
    if hint:
        raise UserError(f"{start}{path.name}: {hint}")


def separator_hint(columns: list[str]) -> str | None:
    """What to do when a table's only column, read with commas, holds another separator (None: it does not)."""
    if len(columns) != 1:
        return None
    for separator, name in OTHER_SEPARATORS.items():
        if separator in columns[0]:
            return (
                f"its header read with commas is one column ({columns[0][:60]!r}): it looks separated by {name}: "
                "save it with commas, or convert it to JSONL"
            )
    return None


def begins_like(head: bytes, path: Path) -> str:
    """What a misnamed compressed file's first bytes say it is, and how to name it ("begins like plain JSON: ...")."""
    plain = path.name[: -len(path.suffix)]
    for suffix, magic in COMPRESSION_MAGIC.items():
        if head.startswith(magic):
            return f"begins like {COMPRESSION_NAMES[suffix]}-compressed data: name it {plain}{suffix}"
    drop = f"drop the {path.suffix} suffix (name it {plain})"
    text = head.removeprefix(BOM).lstrip()
    if text[:1] in (b"{", b"["):
        return f"begins like plain JSON: {drop}"
    if head.startswith(PARQUET_MAGIC):
        return f"begins like a Parquet file: {drop}"
    if any(byte < 0x20 and byte not in b"\t\r\n" for byte in text[:32]):  # control bytes: not text
        return f"begins with the bytes {head[:8].hex(' ')}, which no compression amapo reads begins with"
    return f"begins like plain text ({text[:20].decode(errors='replace')!r}): {drop}"


def zstd_readable() -> bool:
    """True when ``datasets``' file system (fsspec) can open a ``.zst`` file: it needs the zstandard package
    (or Python 3.14's compression.zstd), not a dependency of amapo."""
    from fsspec.compression import compr

    return "zstd" in compr


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
