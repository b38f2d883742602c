"""What a user sees on the command line, as the tests read it."""

from __future__ import annotations


def error_line(capsys, command: str) -> str:
    """The one line a user error prints (``amapo COMMAND: error: ...`` last on stderr, no traceback), without its
    prefix."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    assert err[-1].startswith(f"amapo {command}: error: "), err
    return err[-1].removeprefix(f"amapo {command}: error: ")
