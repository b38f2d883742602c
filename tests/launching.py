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


def signal_while_loading(signum: int, output_dir: Path) -> subprocess.CompletedProcess:
    """``amapo train`` in a child process, sent ``signum`` once torch's library is mapped (mid-import, whatever the
    machine's load: after a fixed delay, a slow start may not have reached Python's own handler yet). The child
    starts with the signal at its default, as a terminal or a service manager starts it: a shell runs `cmd &` with
    SIGINT ignored, and Python keeps an ignored SIGINT ignored."""
    import signal
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "amapo.cli", "train", "--output_dir", str(output_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))  # fmt: skip
    maps, deadline = Path(f"/proc/{process.pid}/maps"), time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and "libtorch" not in maps.read_text():
        time.sleep(0.005)
    process.send_signal(signum)
    err = process.communicate(timeout=120)[1]
    return subprocess.CompletedProcess(process.args, process.returncode, "", err)
