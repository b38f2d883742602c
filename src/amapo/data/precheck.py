"""Check a local JSON / JSON Lines dataset row by row before anything heavy loads (no torch, no ``datasets``).

``amapo train`` calls ``check_local_dataset`` on every dataset it was given while it is still parsing options, so
a bad row is one line within seconds, naming file, line, row and field, not after the model has loaded. It runs
the same checks as the conversion (``amapo.data.formats`` / ``amapo.data.pairs``) and stops at the first error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from amapo.data.errors import DataError
from amapo.data.formats import NUMERIC_FIELDS, check_numbers, field_paths, lookup
from amapo.data.pairs import MISSING, check_role_mapping, mixed_kinds, row_kind, standardize_pair
from amapo.data.reading import checked_rows, is_json_file, read_json_rows


def check_local_dataset(
    source: str,
    *,
    column_mapping: Mapping[str, str] | None = None,
    role_mapping: Mapping[str, str] | None = None,
    drop_invalid: bool = False,
    numeric_fields: Sequence[str] = NUMERIC_FIELDS,
) -> int | None:
    """The number of rows of the local JSON/JSONL file ``source``, after checking every one; None for a source
    this cannot read cheaply (parquet, csv, a folder, a Hub name, ``builtin:``). With ``drop_invalid`` only the
    file itself is checked (it parses, one kind per column): bad rows are dropped later, and counted.

    Errors read ``pairs.jsonl:5, row 4, field 'chosen': response is empty``: line and row both, since a split
    such as "train[90%:]" numbers its rows from its own start (``DataError``).
    """
    path = Path(source).expanduser()
    if not (path.is_file() and is_json_file(path)):
        return None
    check_role_mapping(role_mapping)
    # first pass: the file parses and keeps one kind per column; the table's columns are every row's keys
    columns: dict[str, None] = {}
    count, first_row = 0, None
    for _, row in checked_rows(path):
        columns |= dict.fromkeys(row)
        count += 1
        first_row = first_row or row
    if drop_invalid:
        return count
    try:
        paths = field_paths(list(columns), column_mapping, first_row if count == 1 else None)
    except DataError as err:
        raise DataError(err.reason, field=err.field, where=path.name) from None
    first = None
    for index, (line, row) in enumerate(read_json_rows(path)):
        try:
            kind = row_kind(_converted_chosen(row, index, paths, list(columns), role_mapping))
            check_numbers({**row, **{name: lookup(row, path) for name, path in paths.items()
                                     if path is not None and name not in ("prompt", "chosen", "rejected")}},
                          index, numeric_fields)  # fmt: skip
            first = first or (kind, index)
            if kind != first[0]:
                raise DataError(mixed_kinds(kind, first), index, "chosen")
        except DataError as err:
            raise DataError(err.reason, err.row, err.field, where=f"{path.name}:{line}") from None
    return count


def _converted_chosen(row: dict[str, Any], index: int, paths: dict, columns: list[str], role_mapping) -> Any:
    """The chosen response of ``row`` after ``formats.standardize_preference_dataset``'s checks and conversion.

    A key missing from this row but present in others is a null in the table, so it is read as None here.
    """
    prompt_path = paths["prompt"]
    prompt = MISSING if prompt_path is None else lookup(row, prompt_path)
    if prompt is MISSING and prompt_path is not None:
        if prompt_path not in columns:  # a nested path (OpenAI's input.messages, a dotted mapping)
            raise DataError(f"missing (path {prompt_path!r})", index, "prompt")
        prompt = None  # "missing (no value)", as the conversion says it
    chosen, rejected = (lookup(row, paths[name]) for name in ("chosen", "rejected"))
    _, chosen, _ = standardize_pair(prompt, chosen, rejected, row=index, role_mapping=role_mapping)
    return chosen
