"""The parent's side of the worker protocol: the command line that starts ``preference_step.py --worker ...``
(it mirrors the options of ``parse_args`` there), the worker's environment, and reading its result line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import AMAPO_FRAMEWORKS, GB, REPO_ROOT, RESULT_MARKER, SCRIPT


def probe_device(a, workdir: Path) -> dict:
    """Peak matmul throughput (and the GPU's name), measured in a subprocess."""
    cmd = [sys.executable, str(SCRIPT), "--worker", "peak", "--device", a.device]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(workdir), cwd=REPO_ROOT, timeout=600)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
            if result.get("ok"):
                return result
            raise RuntimeError(f"measuring the peak matmul throughput failed: {result.get('error')}")
    raise RuntimeError(f"measuring the peak matmul throughput failed:\n{proc.stderr[-3000:]}")


def worker_command(a, framework: str, vocab: int, model_dir: Path, data: Path, output_dir: Path) -> list[str]:
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--worker", framework,
        "--vocab", str(vocab),
        "--model_dir", str(model_dir),
        "--data", str(data),
        "--output_dir", str(output_dir),
        "--batch", str(a.batch),
        "--min_len", str(a.min_len),
        "--max_len", str(a.max_len),
        "--steps", str(a.steps),
        "--warmup", str(a.warmup),
        "--lr", repr(a.lr),
        "--seed", str(a.seed),
        "--device", a.device,
        "--liger_chunk_size", str(a.liger_chunk_size),
        "--losscheck_batch", str(a.losscheck_batch),
    ]  # fmt: skip
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    if a.amapo_layout is not None:
        cmd += ["--amapo_layout", a.amapo_layout]
    if a.amapo_lm_head_chunk_size is not None:
        cmd += ["--amapo_lm_head_chunk_size", str(a.amapo_lm_head_chunk_size)]
    if a.liger_no_compile:
        cmd += ["--liger_no_compile"]
    if getattr(a, "gradient_checkpointing", False):
        cmd += ["--gradient_checkpointing"]
    if a.with_liger:
        cmd += ["--with_liger"]
    if framework in getattr(a, "setup_only_names", {}):  # --rehearse: an entry this machine cannot run
        cmd += ["--setup_only"]
    if getattr(a, "profile_trace", None):
        cmd += ["--profile_trace", str(a.profile_trace)]
    return cmd


def worker_env(workdir: Path, src: Path | None = None) -> dict:
    """The worker's environment: ``src`` (default this checkout's ``src``) first on PYTHONPATH, so that the worker
    imports that amapo; offline Hub, a private datasets cache."""
    env = os.environ.copy()
    src = str(src or REPO_ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_CACHE", str(workdir / "hf_datasets_cache"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_worker(
    a,
    framework: str,
    vocab: int,
    paths: dict,
    workdir: Path,
    tag: str,
    src: Path | None = None,
    memory_cap: int | None = None,
) -> dict:
    """Run one worker (``src``: the amapo source folder it imports, default this checkout's) and read its result.

    ``memory_cap`` (bytes; ``memory_vs_length.py`` on a CPU): the worker and its children are watched and killed as
    soon as their RSS goes above it, and the result says so in an error that reads as out of memory (``report.py``'s
    ``is_out_of_memory``), so that a worker past the cap costs neither the machine nor the run."""
    output_dir = workdir / "runs" / tag
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    log_path = workdir / "logs" / f"{tag}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = worker_command(a, framework, vocab, paths["model_dir"], paths["data"], output_dir)
    start = time.perf_counter()
    over_cap = None
    if memory_cap is not None:
        stdout, stderr, returncode, over_cap = run_capped(cmd, a.worker_timeout, worker_env(workdir, src), memory_cap)
    else:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.worker_timeout,
                                  env=worker_env(workdir, src), cwd=REPO_ROOT)  # fmt: skip
            stdout, stderr, returncode = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            stdout, stderr, returncode = as_text(e.stdout), as_text(e.stderr), None
    elapsed = time.perf_counter() - start
    log_path.write_text(f"$ {shlex.join(cmd)}\n\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
    result = None
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            with contextlib.suppress(json.JSONDecodeError):
                result = json.loads(line[len(RESULT_MARKER) :])
            break
    if result is None:
        if over_cap is not None:
            error = f"out of memory: stopped by the memory cap, RSS {over_cap / GB:.2f} GiB > {memory_cap / GB:.2f} GiB"
        elif returncode is None:
            error = f"timed out after {a.worker_timeout} s"
        elif returncode < 0:
            signal_number = -returncode
            error = f"killed by signal {signal_number}" + (" (likely out of memory)" if signal_number == 9 else "")
        else:
            error = f"exited with code {returncode} without a result"
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        result = {"framework": framework, "vocab": vocab, "ok": False, "error": error, "stderr_tail": tail}
    if over_cap is not None:
        result["over_memory_cap"] = over_cap
    result["returncode"] = returncode
    result["process_wall_s"] = elapsed
    result["log"] = str(log_path)
    shutil.rmtree(output_dir, ignore_errors=True)  # trainer outputs (saved models) are not needed afterwards
    return result


def as_text(output: str | bytes | None) -> str:
    """A timed-out process's output (``subprocess.TimeoutExpired`` may hold bytes even with ``text=True``)."""
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


CAP_POLL_S = 0.05  # how often a capped worker's RSS is read: at ~10 GB/s of allocation, 0.5 GB past the cap at most


def run_capped(cmd: list[str], timeout: float, env: dict, memory_cap: int) -> tuple[str, str, int | None, int | None]:
    """``cmd`` with its RSS (its own and its children's, by psutil) read every ``CAP_POLL_S``; above ``memory_cap``
    the process tree is killed. Returns stdout, stderr, the exit status (None: timed out) and the RSS that went
    over the cap (None: it never did)."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    end = time.perf_counter() + timeout
    over_cap = timed_out = None
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=CAP_POLL_S)  # retrying after a timeout loses no output
            break
        except subprocess.TimeoutExpired:
            rss = tree_rss_bytes(psutil, proc.pid)
            if rss > memory_cap:
                over_cap = rss
            timed_out = time.perf_counter() > end
            if over_cap is not None or timed_out:
                kill_tree(psutil, proc.pid)
                stdout, stderr = proc.communicate()
                break
    return stdout, stderr, None if timed_out and over_cap is None else proc.returncode, over_cap


def tree_rss_bytes(psutil, pid: int) -> int:
    """RSS of a process and all its descendants (torch.compile's workers, a tokenizer pool)."""
    total = 0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


def kill_tree(psutil, pid: int) -> None:
    """SIGKILL a process's descendants, then the process."""
    try:
        root = psutil.Process(pid)
        children = root.children(recursive=True)
    except psutil.Error:
        return
    for process in [*children, root]:
        with contextlib.suppress(psutil.Error):
            process.kill()


def baseline_frameworks(a, frameworks: list[str]) -> dict[str, Path]:
    """``--amapo_baseline DIR`` (another checkout of amapo, e.g. a git worktree of an older commit): each amapo
    framework also runs from DIR/src, as ``NAME@<DIR's short commit>`` right after NAME. Returns name -> src."""
    if not a.amapo_baseline:
        return {}
    folder = Path(a.amapo_baseline).resolve()
    if not (folder / "src" / "amapo" / "__init__.py").is_file():
        raise SystemExit(f"--amapo_baseline {a.amapo_baseline}: no src/amapo there (pass a checkout of amapo)")
    commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    label = commit.stdout.strip() if commit.returncode == 0 else folder.name
    added = {}
    for name in list(frameworks):
        if name in AMAPO_FRAMEWORKS:  # the plain ones: a baseline commit may not have the options
            frameworks.insert(frameworks.index(name) + 1, f"{name}@{label}")
            added[f"{name}@{label}"] = folder / "src"
    return added
