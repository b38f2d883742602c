"""Dropping invalid rows, only when asked (``drop_invalid=True``), and never silently: counted per reason."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from amapo.data.caching import SOURCE_DIGEST
from amapo.data.errors import DataError

if TYPE_CHECKING:
    import datasets  # (type hints only: importing this module must stay light)

logger = logging.getLogger(__name__)

ROW_INDEX = "row_index"  # the source row of each pair, kept through dropping so later messages name it


def reason_key(err: DataError) -> str:
    """A per-reason counting key: the field and the reason without its row-specific details."""
    reason = re.split(r" \(|: ", err.reason, maxsplit=1)[0]
    return f"{err.field}: {reason}" if err.field else reason


def describe(counts: Counter) -> str:
    return ", ".join(f"{n} x {reason}" for reason, n in counts.most_common())


def drop_invalid_rows(
    dataset: datasets.Dataset,
    check_row: Callable[[dict, int], object],
    *,
    stage: str,
    dropped: Counter | None = None,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """``dataset`` without the rows for which ``check_row(row, index)`` raises DataError.

    Other errors propagate. The dropped rows are counted per reason into ``dropped`` and logged once; the kept
    rows gain a ``row_index`` column with their index in ``dataset`` (unless they have one), so that messages
    about them still name the source row. Dropping every row is a DataError, naming the reasons.
    """

    def reason_of(row: dict, index: int, code_version: str) -> dict:
        try:
            check_row(row, index)
        except DataError as err:
            return {"_invalid": reason_key(err)}
        return {"_invalid": ""}

    reasons = dataset.map(
        reason_of,
        with_indices=True,
        fn_kwargs={"code_version": SOURCE_DIGEST},  # see amapo.data.caching
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"Checking rows ({stage})",
    )["_invalid"]
    counts = Counter(r for r in reasons if r)
    if dropped is not None:
        dropped.update(counts)
    if not counts:
        return dataset
    keep = [i for i, reason in enumerate(reasons) if not reason]
    if not keep:  # a DataError (a UserError): one line at the command line, and nothing loads after it
        fix = "; raise --max_length" if any("truncation" in reason for reason in counts) else ""
        raise DataError(
            f"every one of the {len(reasons)} rows is invalid ({stage}): {describe(counts)}; nothing is left to use"
            f"{fix} (without --drop_invalid_rows the first bad row is named with its whole reason)"
        )
    logger.warning("dropped %d of %d rows (%s): %s", sum(counts.values()), len(reasons), stage, describe(counts))
    if ROW_INDEX not in dataset.column_names:
        dataset = dataset.add_column(ROW_INDEX, list(range(len(dataset))))
    return dataset.select(keep)
