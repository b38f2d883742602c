"""A local JSON / JSONL file as a ``datasets.Dataset``, typed from every row, never from the first batch alone.

``Dataset.from_generator`` (and ``datasets``' JSON builder) fix each column's Arrow type from the first batch of
rows: a later decimal after integers, a key missing from a later row, or a list after empty ones then fails
without naming a row, and a later list where strings came first is silently stored as its JSON text. So the rows
are read twice: once to check them (``amapo.data.reading``, errors name file and line) and to infer one Arrow
schema over all of them, then again to write the table with that schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import datasets
import pyarrow as pa

from amapo.data.caching import SOURCE_DIGEST
from amapo.data.errors import DataError
from amapo.data.reading import checked_rows
from amapo.errors import UserError

CHUNK_ROWS = 1000  # rows typed at once while inferring the schema


def infer_features(path: Path) -> datasets.Features:
    """One schema for every row of ``path``: the union of the keys, integers beside decimals as decimals."""
    rows, schema = checked_rows(path), pa.schema([])
    while chunk := list(islice(rows, CHUNK_ROWS)):
        lines = [line for line, _ in chunk]
        try:
            typed = pa.array([row for _, row in chunk]).type
            schema = pa.unify_schemas([schema, pa.schema(list(typed))], promote_options="permissive")
        except (pa.ArrowException, OverflowError, TypeError) as err:  # after the checks: e.g. an integer past int64
            reason = " ".join(str(err).split())
            where = f"{path.name}:{lines[0]}-{lines[-1]}"
            raise DataError(f"these rows cannot be stored as a table ({reason})", where=where) from None
    return datasets.Features.from_arrow_schema(schema)


def _rows(path: str, columns: tuple[str, ...], size: int, mtime_ns: int, code_version: str):
    # size, mtime and code version only key the cache: an edited file (or reader) is read again
    for _, row in checked_rows(path):
        yield {column: row.get(column) for column in columns}  # a key missing from a row is a null


@contextmanager
def datasets_progress_hidden() -> Iterator[None]:
    """Hide ``datasets``' "Generating train split" bar: the rows were just read and checked, and a bar printed
    before a one-line data error would make it two lines."""
    was_hidden = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_hidden:
            datasets.enable_progress_bars()


def json_dataset(path: Path) -> datasets.Dataset:
    """The rows of a local JSON / JSONL file as a Dataset; a problem names the file and line (``reading``).

    Written to the ``datasets`` cache like its own JSON builder's output, so later steps (tokenizing) cache too.
    """
    features = infer_features(path)
    stat = path.stat()  # (columns is a tuple: a list in gen_kwargs would be split into shards)
    kwargs = {"path": str(path.absolute()), "columns": tuple(features), "size": stat.st_size}
    kwargs |= {"mtime_ns": stat.st_mtime_ns, "code_version": SOURCE_DIGEST}
    try:
        with datasets_progress_hidden():
            return datasets.Dataset.from_generator(_rows, features=features, gen_kwargs=kwargs)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, UserError):  # ours, naming file and line (the file changed since it was typed)
            raise cause from None
        raise
