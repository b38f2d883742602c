"""How often a finished 2-process run dies at exit: the torchrun launch of the distributed tests, many times, beside
CPU hogs (a loaded CI machine), each tree in turn.

    python benchmarks/distributed_exit.py --runs 40 --hogs 2                       # this checkout
    python benchmarks/distributed_exit.py --runs 40 --trees . /tmp/amapo-ff75f66   # side by side, alternating

A run counts as "aborted" when a rank died of a signal after the run's summary was printed (the training itself
finished), "failed" for any other non-zero exit, and "ok" otherwise. Each tree runs with its own ``src`` first on
PYTHONPATH, so an old commit's worktree is measured with this machine's packages. Logs of the runs that did not
end "ok" are kept in ``--logs``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN = (
    "train", "--config", "builtin", "--max_steps", "3", "--eval_datasets", "none", "--logging_steps", "1",
    "--optim", "sgd", "--max_grad_norm", "0", "--learning_rate", "1e-2", "--warmup_ratio", "0",
    "--per_device_train_batch_size", "4", "--method", "amapo", "--margin_stats", "all_ranks",
)  # fmt: skip
HOG = "while True: sum(range(10000))"
SIGNAL = re.compile(r"Signal (\d+) \((\w+)\) received")
CAUSES = ("terminate called", "Fatal Python error", "what()", "Error")


def outcome(result: subprocess.CompletedProcess) -> tuple[str, str]:
    """ok / aborted / failed, and the first line that names a cause."""
    if result.returncode == 0:
        return "ok", ""
    lines = result.stderr.splitlines()
    cause = next((line.strip() for line in lines if any(c in line for c in CAUSES)), "")
    signals = SIGNAL.findall(result.stderr)
    finished = "train_loss" in result.stdout + result.stderr
    if finished and any(name in ("SIGABRT", "SIGSEGV") for _, name in signals):
        return "aborted", cause
    return "failed", cause or (lines[-1] if lines else "")


def launch(tree: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(tree / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "amapo.cli", *TRAIN, "--output_dir", str(out)]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tree)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="launches of each tree")
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes running beside each launch")
    parser.add_argument("--trees", nargs="+", default=["."], help="checkouts to measure (each tree's src/ is used)")
    parser.add_argument("--logs", default="", help="where the logs of runs not ok go (default: a temporary folder)")
    args = parser.parse_args(argv)

    trees = [Path(tree).resolve() for tree in args.trees]
    logs = Path(args.logs or tempfile.mkdtemp(prefix="distributed-exit-"))
    logs.mkdir(parents=True, exist_ok=True)
    counts = {tree: {"ok": 0, "aborted": 0, "failed": 0} for tree in trees}
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.runs):
            for number, tree in enumerate(trees):
                hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
                try:
                    result = launch(tree, Path(scratch) / f"run{run}-{number}")
                finally:
                    for hog in hogs:
                        hog.kill()
                        hog.wait()
                kind, cause = outcome(result)
                counts[tree][kind] += 1
                if kind != "ok":
                    log = logs / f"run{run}-tree{number}.log"
                    log.write_text(result.stderr)
                    print(f"run {run + 1}, {tree}: {kind}: {cause} (log {log})", flush=True)

    print(f"\n{args.runs} runs of each tree, {args.hogs} CPU hogs beside each (this machine: {os.cpu_count()} CPUs)")
    print("| tree | ok | aborted at exit | failed |\n|---|---|---|---|")
    for tree, count in counts.items():
        print(f"| {tree} | {count['ok']} | {count['aborted']} | {count['failed']} |")
    return 0 if all(count["failed"] == 0 for count in counts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
