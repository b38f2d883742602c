"""How long a user waits for a mistake's one-line error, and for each command's ``--help`` (the README's
"Mistakes: one line, before anything loads" table).

    python benchmarks/cli_latency.py                     # medians of 5, in a fresh temporary folder
    python benchmarks/cli_latency.py --runs 1 --only help

Each command runs as a user would type it (a new process, the shell's ``amapo``), ``--runs`` times in turn, beside
the yardstick ``python -c "import torch, transformers"``: an error found before that import costs less than it.
One command needs a finished run in its folder; a 2-step ``amapo train`` makes it first (not timed).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

FINISHED_RUN = "outputs/amapo-builtin"
COMMANDS = [
    'python -c "import torch, transformers"',
    "amapo train --beta inf",
    "amapo train --config builtin --lerning_rate 1",
    "amapo train --model_name_or_path builtin:tiny-llama --dataset nope.jsonl",
    f"amapo train --output_dir {FINISHED_RUN}",
    *(f"amapo {command} --help" for command in ("train", "eval", "analyze", "compare", "generate", "make-pairs")),
]


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1][:120] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (the median is reported)")
    parser.add_argument("--only", default="", help="only the commands containing this text")
    args = parser.parse_args(argv)
    commands = [command for command in COMMANDS if args.only in command]
    if args.runs < 1 or not commands:
        parser.error("--runs must be at least 1" if args.runs < 1 else f"no command contains {args.only!r}")
    with tempfile.TemporaryDirectory(prefix="amapo-cli-latency-") as folder:
        if any(FINISHED_RUN in command for command in commands):
            subprocess.run(f"amapo train --max_steps 2 --output_dir {FINISHED_RUN}", shell=True, cwd=folder,
                           check=True, capture_output=True)  # fmt: skip
        print("| command | wall (median) | exit | last line |\n|---|---|---|---|")
        for command in commands:
            walls = []
            for _ in range(args.runs):
                start = time.perf_counter()
                result = subprocess.run(command, shell=True, cwd=folder, capture_output=True, text=True)
                walls.append(time.perf_counter() - start)
            print(f"| `{command}` | {statistics.median(walls):.2f} s | {result.returncode} | {last_line(result)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
