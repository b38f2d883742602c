"""How long a user waits for a mistake's one-line error, and for each command's ``--help`` (the table of
docs/mistakes-and-recovery.md, "Mistakes: one line, before anything loads").

    python benchmarks/cli_latency.py                     # medians of 5, in a fresh temporary folder
    python benchmarks/cli_latency.py --runs 1 --only help

Each command runs as a user would type it (a new process, the shell's ``amapo``), ``--runs`` times in turn, beside
the yardstick ``python -c "import torch, transformers"``: an error found before that import costs less than it.
Some commands need files in their folder: a finished run (a 2-step ``amapo train``), a copy of its model with the
weights cut short, a folder holding eval results, pairs that truncation makes identical; made first (not timed).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

FINISHED_RUN = "outputs/amapo-builtin"
TRUNCATED_MODEL = "truncated-model"  # the finished run's model, its weights cut 100 bytes short
EVALUATED = "evaluated"  # a folder holding an earlier `amapo eval`'s results
SAME_TOKENS = "same-after-truncation.jsonl"  # pairs whose responses --max_length 20 cuts to the same tokens
COMMANDS = [
    'python -c "import torch, transformers"',
    "amapo train --beta inf",
    "amapo train --config builtin --lerning_rate 1",
    "amapo train --model_name_or_path builtin:tiny-llama --dataset nope.jsonl",
    f"amapo train --output_dir {FINISHED_RUN}",
    "amapo train --output_dir /proc/run",
    f"amapo train --model_name_or_path {TRUNCATED_MODEL} --dataset builtin:reverse",
    f"amapo train --model_name_or_path builtin:tiny-llama --dataset {SAME_TOKENS} --max_length 20 "
    "--max_prompt_length 19",
    f"amapo eval --model_name_or_path {TRUNCATED_MODEL}",
    f"amapo eval --model_name_or_path builtin:tiny-llama --output_dir {EVALUATED}",
    *(f"amapo {command} --help" for command in ("train", "eval", "analyze", "compare", "generate", "make-pairs")),
]


def prepare(folder: str, commands: list[str]) -> None:
    """What the commands need in ``folder`` (not timed): a finished run, a model cut short, an evaluated folder,
    pairs that truncation makes identical."""
    import json
    import os
    import shutil
    from pathlib import Path

    root = Path(folder)
    needed = " ".join(commands)
    if FINISHED_RUN in needed or TRUNCATED_MODEL in needed:
        subprocess.run(f"amapo train --max_steps 2 --output_dir {FINISHED_RUN}", shell=True, cwd=folder,
                       check=True, capture_output=True)  # fmt: skip
    if TRUNCATED_MODEL in needed:
        shutil.copytree(root / FINISHED_RUN, root / TRUNCATED_MODEL, ignore=shutil.ignore_patterns("checkpoint-*"))
        weights = root / TRUNCATED_MODEL / "model.safetensors"
        os.truncate(weights, weights.stat().st_size - 100)
    if EVALUATED in needed:
        (root / EVALUATED).mkdir()
        (root / EVALUATED / "eval_results.json").write_text("{}")
    if SAME_TOKENS in needed:
        start = "The answer to this question is long, and after all of that it is "
        rows = [{"prompt": f"Q{i}", "chosen": start + "yes", "rejected": start + "no"} for i in range(8)]
        (root / SAME_TOKENS).write_text("".join(json.dumps(row) + "\n" for row in rows))


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
        prepare(folder, commands)
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
