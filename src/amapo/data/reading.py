"""Read a local JSON / JSON Lines file row by row, so that every problem names the file and the 1-based line.

``datasets``' JSON builder reports a malformed line as "Expected object or value at position 61", an empty file
as a bare ``StopIteration`` and bad UTF-8 without a row; a value whose type changes after the first 10 MB of rows
is an Arrow cast error without a row, or, nested in messages, is silently stored as its JSON text. Reading the
rows ourselves gives ``pairs.jsonl:4: not valid JSON (...)`` and ``pairs.jsonl:1201: got a list in
'chosen[].content' where row 0 (line 1) has text``, wherever the row is.

Accepted, as ``datasets`` accepts them: JSON Lines (one object per line; blank lines and a UTF-8 BOM skipped) in
a ``.jsonl`` or ``.json`` file, a ``.json`` file holding one list of objects, or one object of equal-length
columns (``{"prompt": [...], "chosen": [...], ...}``); gzip / bz2 / xz compressed copies of each. A compressed
stream cut short or corrupt is one line naming the file and the last line read (``DecompressionFailed``), not the
decompressor's traceback (its first bytes were checked before: ``amapo.data.sources.check_compressed``).
Needs neither torch nor ``datasets``: the CLI reads a dataset's rows with it before anything heavy loads.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amapo.data.errors import DataError

OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# What gzip / bz2 / lzma (and zstandard, read by ``datasets``) raise on a stream cut short or corrupt: EOFError
# (cut short), gzip.BadGzipFile and bz2's OSError (bad header or data), zlib.error (bad deflate data), LZMAError.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, lzma.LZMAError)
JSON_SUFFIXES = (".json", ".jsonl")
BOM = b"\xef\xbb\xbf"


def _json_suffix(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in OPENERS:
        suffixes.pop()
    return suffixes[-1] if suffixes and suffixes[-1] in JSON_SUFFIXES else None


def is_json_file(path: Path) -> bool:
    """A file this module reads: .json / .jsonl, optionally .gz / .bz2 / .xz compressed."""
    return _json_suffix(path) is not None


def _open_binary(path: Path):
    return OPENERS.get(path.suffix.lower(), open)(path, "rb")


def _decode(raw: bytes, name: str, line: int) -> str:
    """``raw`` (starting on ``line``) as text; bad UTF-8 names the line and column of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line += raw.count(b"\n", 0, err.start)
        column = err.start - raw.rfind(b"\n", 0, err.start)
        reason = f"not UTF-8 (byte 0x{raw[err.start]:02x} at column {column}); save the file as UTF-8"
        raise DataError(reason, where=f"{name}:{line}") from None


def _parse(text: str, name: str, line: int | None) -> Any:
    """``text`` parsed; ``line`` is the line of a JSON Lines row (None: ``text`` is the whole file)."""
    if line is not None:  # a row's own newline would move an error at its end to "line 2, column 1"
        text = text.rstrip("\r\n")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        reason = f"not valid JSON ({err.msg} at column {err.colno})"
        raise DataError(reason, where=f"{name}:{line or err.lineno}") from None


def _as_row(value: Any, name: str, line: int) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"a row must be a JSON object, got {_a(value_kind(value))}", where=f"{name}:{line}")
    return value


def read_json_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(1-based line, row) for every row of ``path``; a DataError names file and line for anything unreadable.

    JSON Lines are read one line at a time (any size). A file holding one JSON document (a list of objects, or, in
    a .json file, one object of columns over several lines) is read whole; its rows carry the line each starts on
    (columns: line 1). An empty file, or one with only blank lines, is an error: training on nothing is never what
    was meant. A compressed file that cannot be decompressed raises ``DecompressionFailed``.
    """
    path = Path(path)
    line = 0
    try:
        for line, row in _rows(path):
            yield line, row
    except DECOMPRESSION_ERRORS as err:
        if path.suffix.lower() not in OPENERS:  # an uncompressed file's OSError is no stream's fault: as it is
            raise
        raise DecompressionFailed(path.name, err, line) from None


class DecompressionFailed(DataError):
    """A compressed file whose stream is cut short or corrupt, named with the last line read whole (0: none; None:
    unknown, as when ``datasets`` read it)."""

    def __init__(self, name: str, err: BaseException | str, line: int | None = None) -> None:
        after = "" if line is None else f" after line {line}" if line else " before its first row"
        reason = " ".join(str(err).split()) or type(err).__name__
        super().__init__(
            f"cannot be decompressed{after} ({reason}): the file is cut short or corrupt; copy or compress it again",
            where=name,
        )
        self.parts = (name, reason, line)  # pickled by Dataset.map's workers: rebuilt from these

    def __reduce__(self):
        return (type(self), self.parts)


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    """``read_json_rows`` without the decompression check."""
    name, may_be_document = path.name, _json_suffix(path) == ".json"
    with _open_binary(path) as f:
        head = f.read(4096).removeprefix(BOM).lstrip()
        f.seek(0)
        if head.startswith(b"["):
            yield from _document_rows(f.read(), name)
            return
        count = 0
        for number, raw in enumerate(f, start=1):
            text = _decode(raw.removeprefix(BOM) if number == 1 else raw, name, number)
            if not text.strip():
                continue
            if count == 0 and may_be_document and text.lstrip().startswith("{") and _incomplete(text):
                f.seek(0)
                yield from _document_rows(f.read(), name)
                return
            count += 1
            yield number, _as_row(_parse(text, name, number), name, number)
        if count == 0:
            raise DataError("the file is empty (no rows)", where=name)


def _incomplete(text: str) -> bool:
    """True when ``text`` is the start of a JSON value that goes on after this line (a pretty-printed object)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return err.pos >= len(text.rstrip())
    return False


def _document_rows(raw: bytes, name: str) -> Iterator[tuple[int, dict]]:
    """The rows of a whole-file JSON document: a list of objects, or one object of equal-length columns."""
    text = _decode(raw.removeprefix(BOM), name, 1)
    document = _parse(text, name, None)
    if isinstance(document, dict):
        yield from ((1, row) for row in _column_rows(document, name))
        return
    starts = _object_lines(text, len(document))
    for line, value in zip(starts, document, strict=True):
        yield line, _as_row(value, name, line)
    if not document:
        raise DataError("the file has no rows (an empty list)", where=name)


def _column_rows(document: dict, name: str) -> list[dict]:
    """Rows of ``{"column": [values], ...}`` (pandas' column layout, which ``datasets`` read too).

    Not columns: an object whose values are not all lists of one length, or whose only value is a list of objects
    (``{"data": [rows]}``: the rows one level down, a wrapper, not a column of one field)."""
    lengths = {key: len(value) for key, value in document.items() if isinstance(value, list)}
    wrapper = len(document) == 1 and rows_in(next(iter(document.values()))) is not None
    if not document or len(lengths) < len(document) or len(set(lengths.values())) != 1 or wrapper:
        raise DataError(top_object_message(document), where=name)
    columns = list(document)
    return [dict(zip(columns, values, strict=True)) for values in zip(*document.values(), strict=True)]


def rows_in(value: Any) -> int | None:
    """The number of rows of ``value`` when it is a non-empty list of JSON objects (rows), else None."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return len(value)
    return None


def top_object_message(document: dict) -> str:
    """Why a file whose top level is one object holds no rows, naming its keys and the key that holds the rows."""
    keys = ", ".join(str(key) for key in list(document)[:8]) + (", ..." if len(document) > 8 else "")
    if not document:
        return "the top level is an empty object, not rows: write the rows as a JSON list of objects or as JSONL"
    holders = {key: n for key, value in document.items() if (n := rows_in(value)) is not None}
    if holders:
        key = max(holders, key=holders.get)  # the longest list of objects: the rows
        objects = f"{holders[key]} object{'' if holders[key] == 1 else 's'}"
        return (
            f"the top level is an object with keys {keys}; its {key!r} holds the rows (a list of {objects}): save "
            "that list as the file (or as JSONL)"
        )
    return (
        f"the top level is an object with keys {keys}, not rows: write the rows as a JSON list of objects or one "
        "object per line (JSON Lines), or as columns: an object of lists of equal length"
    )


def _object_lines(text: str, count: int) -> list[int]:
    """The line on which each of the ``count`` top-level values of a JSON list starts (for messages)."""
    decoder, lines, position = json.JSONDecoder(), [], text.index("[") + 1
    line = 1 + text.count("\n", 0, position)
    while len(lines) < count:
        while text[position] in " \t\r\n,":
            line += text[position] == "\n"
            position += 1
        lines.append(line)
        _, end = decoder.raw_decode(text, position)
        line += text.count("\n", position, end)
        position = end
    return lines


def value_kind(value: Any) -> str:
    """The kind of a JSON value as Arrow must store it: 'text', 'list', 'object', 'number', 'bool' or 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {str: "text", list: "list", dict: "object"}.get(type(value), type(value).__name__)


class KindChecker:
    """Every value keeps one kind from row to row, at every depth (``chosen``, ``chosen[].content``, ``meta.score``).

    Arrow needs one type per column; a mix is usually two formats in one file (plain rows among conversational
    ones, multimodal content among strings), so it is refused at the first row that differs. Nulls and missing
    keys are fine (stored as null), and so are integers beside decimals (stored as decimals).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.first: dict[str, tuple[str, int, int]] = {}  # path -> (kind, line, row)

    def check(self, row: dict, line: int, index: int) -> None:
        for field, value in row.items():
            self._check(value, field, field, line, index)

    def _check(self, value: Any, path: str, field: str, line: int, index: int) -> None:
        kind = value_kind(value)
        if kind == "null":
            return
        seen = self.first.setdefault(path, (kind, line, index))
        if seen[0] != kind:
            where = "" if path == field else f" in {path!r}"
            raise DataError(
                f"got {_a(kind)}{where} where row {seen[2]} (line {seen[1]}) has {_a(seen[0])}; a dataset must use "
                "one format for every row",
                index,
                field,
                where=f"{self.name}:{line}",
            )
        if kind == "list":
            for item in value:
                self._check(item, path + "[]", field, line, index)
        elif kind == "object":
            for key, item in value.items():
                self._check(item, f"{path}.{key}", field, line, index)


def _a(kind: str) -> str:
    return {"list": "a list", "object": "an object", "number": "a number", "bool": "a boolean"}.get(kind, kind)


def checked_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``read_json_rows``, each row checked to keep every value's kind (``KindChecker``)."""
    checker = KindChecker(Path(path).name)
    for index, (line, row) in enumerate(read_json_rows(path)):
        checker.check(row, line, index)
        yield line, row
