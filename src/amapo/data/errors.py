"""The one error a bad preference row raises: it names the row and the field, so the user can find it."""

from __future__ import annotations

from amapo.errors import UserError


class DataError(UserError):
    """A preference row (or dataset) that amapo cannot use.

    ``row`` is the row's index in the dataset being converted or tokenized (for a sliced split such as
    ``"train[90%:]"`` that is the index inside the slice), ``field`` the standard field ("prompt", "chosen",
    "rejected", or a mapped extra column), ``reason`` what is wrong. Either may be None when the problem is the
    dataset as a whole. ``where`` names the file and 1-based line when the rows come from a local JSON file
    (``amapo.data.reading``). ``str(err)`` reads ``"row 17, field 'chosen': response is empty"``, or
    ``"pairs.jsonl:18, row 17, field 'chosen': response is empty"``.
    """

    def __init__(self, reason: str, row: int | None = None, field: str | None = None, where: str | None = None) -> None:
        self.reason = reason
        self.row = row
        self.field = field
        self.where = where
        super().__init__(self._message())

    def _message(self) -> str:
        where = [self.where] if self.where else []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def __reduce__(self):
        # Dataset.map(num_proc=...) pickles errors raised in worker processes; keep every part across.
        return (type(self), (self.reason, self.row, self.field, self.where))
