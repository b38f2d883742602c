"""What a checkpoint was trained on: a fingerprint of the tokenized training rows, recorded in each checkpoint
(``DATA_FILE``) so that a resume on other content under the same name is refused (``run_folder.check_resumed_data``).

The fingerprint is a sha256 over the tokenized split's columns, in row order, not ``datasets``' own
``Dataset._fingerprint``: that one is a hash of the steps that built the dataset (the loader's arguments, the
mapped functions pickled), so it changes with a datasets or transformers upgrade while the rows stay the same, and
is random for a dataset built in memory. The sha256 is the same for the same rows in any process and any run, and
costs about 0.1 s per 10,000 pairs of ~800 tokens (measured on one CPU core: ~0.6 s for an UltraFeedback-sized
split of 60,000), once per run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DATA_FILE = "amapo_data.json"  # in each checkpoint: {"dataset", "split", "rows", "sha256"} of its training rows

# Derived from the other columns by the batch layout, not data: the same rows give the same fingerprint in any layout
DERIVED_COLUMNS = ("length",)
BATCH_ROWS = 10_000  # rows hashed at a time (fixed: the hash must not depend on how the rows are cut)


def data_fingerprint(dataset) -> str:
    """sha256 (hex) over every column of ``dataset`` but ``DERIVED_COLUMNS``, by name, rows in order."""
    digest = hashlib.sha256()
    names = sorted(name for name in dataset.column_names if name not in DERIVED_COLUMNS)
    digest.update(json.dumps([names, len(dataset)]).encode())
    for table in dataset.with_format("arrow").iter(batch_size=BATCH_ROWS):  # (applies any indices mapping)
        for name in names:
            digest.update(column_bytes(table[name]))
    return digest.hexdigest()


def column_bytes(column: pa.ChunkedArray) -> bytes:
    """The values of one column as bytes that depend on the values alone, not on how arrow holds them in memory
    (chunks, slices): token ids and numbers as int64 / float64 with each list's length, anything else as JSON."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = pc.list_flatten(column)
        if pa.types.is_integer(inner.type) and inner.null_count == 0:
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
            values = inner.to_numpy(zero_copy_only=False).astype(np.int64)
            return b"L" + lengths.tobytes() + values.tobytes()
    elif (pa.types.is_integer(kind) or pa.types.is_boolean(kind)) and column.null_count == 0:
        return b"I" + column.to_numpy(zero_copy_only=False).astype(np.int64).tobytes()
    elif pa.types.is_floating(kind):  # (a null is NaN here, as datasets reads a missing number)
        return b"F" + column.to_numpy(zero_copy_only=False).astype(np.float64).tobytes()
    return b"J" + json.dumps(column.to_pylist(), sort_keys=True, default=str).encode()


def data_record(dataset, source: str, split: str) -> dict:
    """What ``DATA_FILE`` records of the training split ``source@split`` (``dataset``, tokenized)."""
    return {"dataset": source, "split": split, "rows": len(dataset), "sha256": data_fingerprint(dataset)}


def write_data_record(folder: Path, record: dict | None) -> None:
    if record is not None:
        (Path(folder) / DATA_FILE).write_text(json.dumps(record, indent=2) + "\n")


def read_data_record(folder: Path) -> dict | None:
    """The record in checkpoint ``folder``, or None for a checkpoint from before amapo wrote one."""
    path = Path(folder) / DATA_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "sha256" in record else None
