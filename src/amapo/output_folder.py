"""Where a command writes: checked before anything loads, without creating it.

Every command that writes (train, eval, analyze, generate, make-pairs, compare) checks its output folder here first,
so ``--output_dir /proc/x`` or a path under a regular file is one line within a second, not a ``FileNotFoundError``
after loading the model and scoring every set. The folder itself is not made: a run refused later leaves nothing.
And results are never replaced silently: a folder that holds what a command writes is refused unless
``--overwrite_output_dir true`` (``check_no_previous_results``; train's own rule is ``amapo.train.run_folder``).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

from amapo.errors import UserError


def check_writable_folder(folder: Path | str, option: str, given: Path | str | None = None) -> None:
    """``folder`` is a folder this process can write in, or one it can create: its nearest existing ancestor is a
    folder (not a file) in which a folder can be made. ``option`` names the flag (e.g. "--output_dir"); ``given``:
    what the user gave, when ``folder`` is the parent of a file (``--output pairs.jsonl``)."""
    folder = Path(folder).expanduser()
    shown = f"{option} {given if given is not None else folder}"
    ancestor = folder.absolute()
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        if os.path.islink(ancestor) and not ancestor.exists():
            what = f"{ancestor} is a link to nothing ({os.readlink(ancestor)})"
        elif ancestor == folder.absolute():
            what = "a file, not a folder"
        else:
            what = f"{ancestor} is a file, so no folder can be made under it"
        raise UserError(f"{shown}: {what}: choose another {option} (the file is left as it is)")
    try:
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied")
        # The permission bits are not the whole story (/proc, a read-only mount, root on NFS): make and remove a
        # folder where the output folder (or the file) will go.
        os.rmdir(tempfile.mkdtemp(prefix=".amapo-write-check-", dir=ancestor))
    except OSError as err:
        what = (
            f"cannot write in {ancestor}"
            if ancestor == folder.absolute()
            else f"cannot be created: {ancestor}, the nearest folder that exists, takes no new folder"
        )
        raise UserError(
            f"{shown}: {what} ({err.strerror or err}): choose an {option} in a folder you can write to"
        ) from None


def previous_results(folder: Path | str, patterns: tuple[str, ...]) -> list[Path]:
    """The files and folders in ``folder`` that match ``patterns`` (what a command writes there), by name."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if any(fnmatch.fnmatch(path.name, p) for p in patterns))


def check_no_previous_results(folder: Path | str, patterns: tuple[str, ...], command: str) -> None:
    """Results are never replaced silently: a folder that holds what ``amapo <command>`` writes is refused, unless
    ``--overwrite_output_dir true`` (the caller's to check)."""
    found = previous_results(folder, patterns)
    if found:
        names = ", ".join(path.name for path in found[:4]) + (", ..." if len(found) > 4 else "")
        raise UserError(
            f"--output_dir {folder} already holds the results of an earlier `amapo {command}` ({names}): choose "
            "another --output_dir, or pass --overwrite_output_dir true to replace them"
        )


def remove_previous_results(folder: Path | str, patterns: tuple[str, ...]) -> list[str]:
    """Remove what an earlier run of the command left in ``folder`` (``--overwrite_output_dir``), so that none of
    it (the scores of a set this run does not score) passes for this run's; the names removed."""
    found = previous_results(folder, patterns)
    for path in found:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return [path.name for path in found]
