"""The answer file: which questions it already answers (a rerun skips them) and adding one batch of answers.

A batch is written whole or not at all, so a run killed mid-way loses at most the batch it was generating:

* JSON Lines (MT-Bench, Arena-Hard): the batch's lines are appended in one write, flushed and fsync'ed. A kill
  during that write can leave an unfinished last line (no newline); the next run drops it and says so.
* A JSON list (AlpacaEval): the whole list is written to a temporary file beside it, fsync'ed, and renamed over
  the old one (``os.replace``, atomic on POSIX), so the file is always a complete list.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from amapo.alpaca_eval_outputs import write_json_list
from amapo.errors import UserError
from amapo.generation.questions import Schema


class AnswerFile:
    """The answers in ``path`` in the format of ``schema``; ``dropped_partial_line``: its last line is torn, and is
    cut off before the next batch is appended."""

    def __init__(self, path: Path, schema: Schema) -> None:
        self.path = path
        self.schema = schema
        self.is_list = schema.name == "alpaca-eval"
        self.rows: list[dict] = []  # a JSON list is rewritten whole; JSON Lines are only appended to
        self.keys: set[Any] = set()
        self.dropped_partial_line = False
        self.complete_bytes: int | None = None
        if path.is_file():
            self._read()

    def _refuse(self, where: str, reason: str) -> UserError:
        return UserError(
            f"{where}: {reason}; it is not a {self.schema.title} answer file that amapo generate can continue: give "
            "another --output, or delete it to start over"
        )

    def _read(self) -> None:
        raw = self.path.read_bytes()
        if not raw.strip():
            return
        if self.is_list:
            try:
                rows = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise self._refuse(str(self.path), f"not valid JSON ({err})") from None
            if not isinstance(rows, list):
                raise self._refuse(str(self.path), "not a JSON list of answers")
            self.rows = rows
            found = [(1, row) for row in rows]
        else:
            if not raw.endswith(b"\n"):  # a write cut short: its batch was not complete, so none of it counts
                raw = raw[: raw.rfind(b"\n") + 1]
                self.complete_bytes = len(raw)  # cut there before the next append (nothing is changed before)
                self.dropped_partial_line = True
            found = []
            for number, line in enumerate(raw.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    found.append((number, json.loads(line)))
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise self._refuse(f"{self.path}:{number}", f"not valid JSON ({err})") from None
        field = self.schema.key_field
        for number, row in found:
            if not isinstance(row, dict) or field not in row:
                where = str(self.path) if self.is_list else f"{self.path}:{number}"
                raise self._refuse(where, f"an answer without {field!r}")
            self.keys.add(row[field])

    def __len__(self) -> int:
        return len(self.keys)

    def append(self, rows: list[dict]) -> None:
        """Add one batch of answer rows, whole or not at all (see the module docstring)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.is_list:
            self.rows = self.rows + rows
            write_json_list(self.path, self.rows)
        else:
            if self.complete_bytes is not None:
                with open(self.path, "r+b") as f:
                    f.truncate(self.complete_bytes)
                    os.fsync(f.fileno())
                self.complete_bytes = None
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        self.keys.update(row[self.schema.key_field] for row in rows)
