"""Writing files so that a kill at any moment leaves either the old file or the new one, never a mix."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """``path`` holds either its old content or ``text``, never a mix: a temporary file beside it, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # opened with "x" (not mkstemp, whose files are 0o600) so the file gets the umask's mode like any other
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
