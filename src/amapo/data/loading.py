"""Load a preference dataset from a local file, a local folder, or the Hugging Face Hub, in the standard form."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets

from amapo.data.formats import NUMERIC_FIELDS, standardize_preference_dataset
from amapo.data.json_table import json_dataset
from amapo.data.reading import DECOMPRESSION_ERRORS, DecompressionFailed, is_json_file
from amapo.data.sources import COMPRESSION_SUFFIXES, check_data_files, data_suffix
from amapo.errors import UserError

# File suffix -> the ``datasets`` builder that reads it; compressed copies (".jsonl.gz") read the same way.
BUILDER_BY_SUFFIX = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _looks_like_local_path(source: str) -> bool:
    """True for "./x", "/x", "~/x", "..", "data.jsonl": a typo there must not turn into a Hub lookup."""
    return source.startswith((".", "/", "~", "\\")) or data_suffix(Path(source)) is not None


def load_raw_dataset(source: str, *, split: str = "train", dataset_config: str | None = None) -> datasets.Dataset:
    """One split of ``source`` as stored, before any format conversion.

    A local JSON / JSONL file (also .gz / .bz2 / .xz) is read by amapo (``amapo.data.json_table``: every problem
    names the file and line), any other file by the ``datasets`` builder for its suffix; a single file is split
    "train", so ``"train[:90%]"`` / ``"train[90%:]"`` slice it into train and eval (``select_split``, as
    ``datasets`` slices). A folder goes through the ``datasets`` folder loader, which picks the format and reads
    split names from file names ("train.jsonl", "test.jsonl"); anything else is a Hub dataset name.
    """
    path = Path(source).expanduser()
    if path.is_file():
        if dataset_config is not None:
            raise UserError(f"--dataset_config {dataset_config} applies to Hub datasets, not to the file {source}")
        if is_json_file(path):  # read ourselves: every problem names the file and line (amapo.data.reading)
            return select_split(json_dataset(path), split, path.name)
        check_data_files("", path)  # a known kind, readable, Parquet magic: one line, not the reader's trace
        return _load_file(path, split)
    if path.is_dir():
        if dataset_config is not None:
            raise UserError(f"--dataset_config {dataset_config} applies to Hub datasets, not to the folder {source}")
        check_data_files("", path)  # holds data files, of one format
        return datasets.load_dataset(str(path), split=split)
    if _looks_like_local_path(source):
        raise UserError(f"preference dataset {source} not found (looked for {path.absolute()})")
    return datasets.load_dataset(source, dataset_config, split=split)


def _load_file(path: Path, split: str) -> datasets.Dataset:
    """A local non-JSON (or zstd-compressed) file through its ``datasets`` builder; a compressed stream cut short or
    corrupt is ``DecompressionFailed`` naming the file, not the builder's DatasetGenerationError."""
    try:
        return datasets.load_dataset(BUILDER_BY_SUFFIX[data_suffix(path)], data_files=str(path), split=split)
    except Exception as err:
        cause = _decompression_cause(err) if path.suffix.lower() in COMPRESSION_SUFFIXES else None
        if cause is None:
            raise
        raise DecompressionFailed(path.name, cause) from None


def _decompression_cause(err: BaseException) -> BaseException | None:
    """The decompressor's error in the chain of ``err`` (zstandard's ZstdError where that package is installed)."""
    errors = DECOMPRESSION_ERRORS
    try:
        import zstandard

        errors = (*errors, zstandard.ZstdError)
    except ImportError:
        pass
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, errors) and not isinstance(seen, FileNotFoundError | PermissionError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def select_split(dataset: datasets.Dataset, split: str, name: str) -> datasets.Dataset:
    """``split`` of a one-file dataset (its only split is "train"), sliced as ``datasets`` slices:
    "train[:90%]", "train[90%:]", "train[10:20]", "train[:10]+train[-5:]"."""
    try:
        parts = datasets.ReadInstruction.from_spec(split).to_absolute({"train": len(dataset)})
    except (ValueError, AssertionError) as err:
        reason = str(err).rstrip(".")
        raise UserError(
            f"{name}: cannot take split {split!r} ({reason}); a single file is split 'train', sliced as 'train[:90%]'"
        ) from None
    indices = [i for part in parts for i in range(part.from_, part.to)]
    return dataset if indices == list(range(len(dataset))) else dataset.select(indices)


def load_preference_dataset(
    source: str,
    *,
    split: str = "train",
    dataset_config: str | None = None,
    column_mapping: Mapping[str, str] | None = None,
    drop_invalid: bool = False,
    dropped: Counter | None = None,
    role_mapping: Mapping[str, str] | None = None,
    numeric_fields: Sequence[str] = NUMERIC_FIELDS,
) -> datasets.Dataset:
    """Load ``source`` and convert it to the standard form (columns ``prompt``, ``chosen``, ``rejected``).

    ``source`` is a local .json/.jsonl/.parquet/.csv file, a local folder of them, or a Hub dataset name
    (loaded as ``datasets.load_dataset(source, dataset_config, split=split)``). Formats and ``column_mapping``
    are described in ``amapo.data.formats``, ``role_mapping`` renames message roles (``amapo.data.pairs``); a bad
    row raises ``DataError`` naming its index (within ``split``) and field; a local JSON/JSONL file that cannot be
    read names the file and line (``amapo.data.reading``).
    """
    raw = load_raw_dataset(source, split=split, dataset_config=dataset_config)
    return standardize_preference_dataset(
        raw,
        column_mapping,
        drop_invalid=drop_invalid,
        dropped=dropped,
        role_mapping=role_mapping,
        numeric_fields=numeric_fields,
    )
