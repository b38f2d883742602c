"""The one kind of error that is the user's to fix: an option, a file, a row. The command line prints it as one
line (what, where, how to fix) and exits with status 2; any other exception is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Something the user asked for cannot work; the message names the option, file or row, and the fix."""
