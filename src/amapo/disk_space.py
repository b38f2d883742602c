"""A full filesystem (or a spent disk quota), recognised whichever library was writing, and sizes in words.

Python's own writes raise ``OSError`` with errno ENOSPC or EDQUOT; the Rust writers (tokenizers, safetensors) raise
their own exception types with "(os error 28)" in the message; torch's zip writer says only "unexpected pos" or
"file write failed", so that one counts as a full filesystem only where the folder it wrote has less free space than
the write needed. Any other failure to write stays what it is (a traceback: a bug, or a cause we cannot name).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

OUT_OF_SPACE = tuple(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)
RUST_IO_ERROR = re.compile(r"\(os error (\d+)\)")
TORCH_WRITE_FAILED = ("inline_container.cc", "PytorchStreamWriter failed", "file write failed", "unexpected pos")


def out_of_space(err: BaseException, folder: Path | None = None, needed: int | None = None) -> int | None:
    """The errno (ENOSPC or EDQUOT) if ``err``, or an exception it was raised from, is a full filesystem or a spent
    quota, else None. ``folder`` and ``needed`` (bytes): where the write went and its size, to recognise torch's
    wordless write failure by the free space left there."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in OUT_OF_SPACE:
            return err.errno
        match = RUST_IO_ERROR.search(str(err))
        if match and int(match.group(1)) in OUT_OF_SPACE:
            return int(match.group(1))
        text = str(err)
        if folder is not None and needed is not None and any(marker in text for marker in TORCH_WRITE_FAILED):
            free = free_bytes(folder)
            if free is not None and free < needed:
                return errno.ENOSPC
        err = err.__cause__ or err.__context__
    return None


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem of ``path`` (or of its nearest existing folder), as ``df`` counts them for this
    user; None where that cannot be read."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def described(code: int) -> str:
    """ "no space left on device" / "disk quota exceeded", as the system words the errno."""
    return os.strerror(code).lower()


def in_words(size: int | None) -> str:
    """``size`` bytes as people read them: "512 B", "3.4 KiB", "1.5 MiB", "12.0 GiB"."""
    if size is None:
        return "an unknown amount"
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
