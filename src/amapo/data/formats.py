"""Recognise a preference dataset's format and convert it, row by row, to the standard form.

Formats, detected from the column names (after ``column_mapping``):

==========================  =========================================================================
plain / conversational      columns ``prompt``, ``chosen``, ``rejected`` (strings, or lists of messages)
implicit prompt             ``chosen`` and ``rejected`` only: the prompt is their shared prefix
OpenAI preference schema    ``input.messages``, ``preferred_output``, ``non_preferred_output``
                            (OpenAI's preference fine-tuning JSONL; other keys of ``input`` are dropped)
mapped                      ``column_mapping={"prompt": "question", "chosen": "a.b", "offset": "score"}``:
                            a standard name -> a source column or dotted path into nested columns
==========================  =========================================================================

A mapping overrides detection field by field, so ``{"offset": "margin"}`` alone still auto-detects the rest.
Source columns that a field was read from are dropped (they would duplicate it); every other column passes
through unchanged. The per-row checks and conversions live in ``amapo.data.pairs``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from amapo.data.caching import SOURCE_DIGEST
from amapo.data.errors import DataError
from amapo.data.invalid import drop_invalid_rows
from amapo.data.pairs import MISSING, check_role_mapping, mixed_kinds, row_kind, standardize_pair
from amapo.data.reading import rows_in, top_object_message
from amapo.data.sources import separator_hint

if TYPE_CHECKING:
    import datasets  # (type hints only: importing this module must stay light)

STANDARD_FIELDS = ("prompt", "chosen", "rejected")
# Columns of numbers a loss reads (ODPO's offset, precomputed reference log-probs): checked as text is checked, so a
# NaN in one row is an error naming it (or a dropped, counted row with drop_invalid), never a skipped step.
NUMERIC_FIELDS = ("offset", "ref_chosen_logps", "ref_rejected_logps")


def check_numbers(values: Mapping[str, Any], index: int, fields: Sequence[str] = NUMERIC_FIELDS) -> None:
    """Every numeric field present in ``values`` holds a finite number (a DataError naming row and column)."""
    for name in fields:
        value = values.get(name, MISSING)
        if value is MISSING:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DataError(f"must be a finite number, got {value!r} (or pass --drop_invalid_rows true)", index, name)


_FRESH = "__amapo_standard__"
OPENAI_PREFERENCE_PATHS = {"prompt": "input.messages", "chosen": "preferred_output", "rejected": "non_preferred_output"}


def lookup(row: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` ("a.b.c" walks nested dicts), or MISSING. A column literally named "a.b" wins."""
    if path in row:
        return row[path]
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return MISSING
        value = value[key]
    return value


def _source_column(path: str, columns: list[str]) -> str:
    return path if path in columns else path.split(".")[0]


def field_paths(
    columns: list[str], column_mapping: Mapping[str, str] | None = None, only_row: Mapping[str, Any] | None = None
) -> dict[str, str | None]:
    """Standard (and mapped extra) field -> source path; ``prompt`` -> None means the prompt is implicit.

    Without a ``chosen`` or ``rejected`` column the message names the fix: --column_mapping, unless no mapping can
    help: one column holding another separator (a CSV saved with ';' or tabs), or ``only_row`` (the dataset's row,
    when it has one) holding a list of rows (a file whose top level is one object that wraps the rows)."""
    mapping = dict(column_mapping or {})
    for name, path in mapping.items():
        if not isinstance(path, str) or _source_column(path, columns) not in columns:
            raise DataError(
                f"column_mapping sends {name!r} to {path!r}, but the dataset has no such column (columns: {columns})",
                field=name,
            )
    paths: dict[str, str | None] = {}
    is_openai = all(path.split(".")[0] in columns for path in OPENAI_PREFERENCE_PATHS.values())
    if is_openai and not ({"chosen", "rejected"} & set(mapping)):
        paths.update(OPENAI_PREFERENCE_PATHS)
    for name in STANDARD_FIELDS:
        paths.setdefault(name, name if name in columns else None)
    paths.update(mapping)
    for name in ("chosen", "rejected"):
        if paths[name] is None:
            hint = separator_hint(columns)
            if hint is None and only_row is not None and any(rows_in(value) for value in only_row.values()):
                hint = top_object_message(dict(only_row))
            if hint:
                raise DataError(hint)
            raise DataError(
                f"the dataset has no {name!r} column (columns: {columns}); "
                f"name the source column with column_mapping={{{name!r}: ...}}",
                field=name,
            )
    return paths


def standardize_preference_dataset(
    dataset: datasets.Dataset,
    column_mapping: Mapping[str, str] | None = None,
    *,
    drop_invalid: bool = False,
    dropped: Counter | None = None,
    role_mapping: Mapping[str, str] | None = None,
    numeric_fields: Sequence[str] = NUMERIC_FIELDS,
) -> datasets.Dataset:
    """``dataset`` in the standard form: ``prompt``/``chosen``/``rejected`` plus passthrough columns.

    ``numeric_fields``: columns whose values must be finite numbers where present (``check_numbers``).

    Runs as ``Dataset.map`` (so it scales to datasets larger than memory). ``role_mapping`` renames message roles
    (``pairs.check_messages``). A bad row, or one whose format (plain or conversational) differs from the first
    row's, raises a DataError naming its index and field, or with ``drop_invalid`` is dropped and counted per
    reason into ``dropped`` (``amapo.data.invalid``).
    """
    check_role_mapping(role_mapping)
    if len(dataset) == 0:
        raise DataError("the dataset has no rows")
    columns = list(dataset.column_names)
    paths = field_paths(columns, column_mapping, dataset[0] if len(dataset) == 1 else None)
    extras = {name: path for name, path in paths.items() if name not in STANDARD_FIELDS}

    def to_standard(row: dict[str, Any], index: int, code_version: str, kind: tuple[str, int] | None = None):
        prompt_path = paths["prompt"]
        prompt = MISSING if prompt_path is None else lookup(row, prompt_path)
        if prompt is MISSING and prompt_path is not None and prompt_path not in columns:
            # a nested path (OpenAI's input.messages, a dotted mapping) absent from this row: not an implicit prompt
            raise DataError(f"missing (path {prompt_path!r})", index, "prompt")
        chosen, rejected = lookup(row, paths["chosen"]), lookup(row, paths["rejected"])
        prompt, chosen, rejected = standardize_pair(prompt, chosen, rejected, row=index, role_mapping=role_mapping)
        if kind is not None and row_kind(chosen) != kind[0]:
            raise DataError(mixed_kinds(row_kind(chosen), kind), index, "chosen")
        out = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        for name, path in extras.items():
            value = lookup(row, path)
            if value is MISSING:
                raise DataError(f"missing (column_mapping path {path!r})", index, name)
            out[name] = value
        check_numbers({**row, **out}, index, numeric_fields)
        return {_FRESH + name: value for name, value in out.items()}

    # every row must have the kind of the first row that converts (a mix: pairs.mixed_kinds)
    kind = first_kind(dataset, lambda row, index: to_standard(row, index, SOURCE_DIGEST), drop_invalid)
    if drop_invalid:  # a checking pass first: the conversion's output types vary with the format of valid rows
        dataset = drop_invalid_rows(
            dataset, lambda row, index: to_standard(row, index, SOURCE_DIGEST, kind), stage="format", dropped=dropped
        )
        columns = list(dataset.column_names)

    # Outputs go to fresh column names, renamed after: a column that map writes under an input column's name
    # is cast to that column's type (a message struct would keep a source-only key such as "name").
    consumed = {_source_column(path, columns) for path in paths.values() if path is not None}
    consumed |= set(paths) & set(columns)
    standard = dataset.map(
        to_standard,
        with_indices=True,
        fn_kwargs={"code_version": SOURCE_DIGEST, "kind": kind},  # code_version: see amapo.data.caching
        remove_columns=sorted(consumed),
        desc="Converting to prompt/chosen/rejected",
    )
    standard = standard.rename_columns({_FRESH + name: name for name in paths})
    passthrough = [name for name in standard.column_names if name not in paths]
    return standard.select_columns([*STANDARD_FIELDS, *extras, *passthrough])


def first_kind(dataset: datasets.Dataset, convert, skip_invalid: bool) -> tuple[str, int] | None:
    """(kind, index) of the first row that converts (``pairs.row_kind``); every other row must have that kind.

    An invalid first row raises its own error, unless ``skip_invalid`` (it will be dropped); None if none converts.
    """
    for index in range(len(dataset)):
        try:
            return row_kind(convert(dataset[index], index)[_FRESH + "chosen"]), index
        except DataError:
            if not skip_invalid:
                raise
    return None
