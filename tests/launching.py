"""Launching amapo in several processes (torchrun, accelerate launch) from the tests, and saying why a launch failed.

A child that dies of a signal prints its cause in lines no single word finds ("terminate called without an active
exception", "Fatal Python error: Aborted"), then the launcher's own report buries it; the failure message carries
the lines that name a cause and the last lines of the log, so a red CI run says what happened.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

CAUSE_MARKERS = ("Error", "error:", "what()", "terminate called", "Fatal Python", "Signal ", "Killed")
PROGRESS_MARKERS = ("it/s]", "s/it]", "examples/s]")  # tqdm bars: noise in a log's tail


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure_message(what: str, result: subprocess.CompletedProcess, log: Path, tail: int = 25) -> str:
    """``what`` failed (exit status), where the whole log is, the lines naming a cause, then the log's last lines."""
    log.write_text(result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.endswith(PROGRESS_MARKERS)]
    causes = [line for line in lines if any(marker in line for marker in CAUSE_MARKERS)]
    return (
        f"{what} failed ({result.returncode}); full log {log}\n"
        + "causes:\n" + "\n".join(causes[:20])
        + f"\nlast {tail} lines:\n" + "\n".join(lines[-tail:])
    )  # fmt: skip
