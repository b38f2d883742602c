"""Regenerate every committed number that comes from running amapo: the comparison reports in ``reports/`` and the
README's default-run table, with the command, the commit and the numerics that made them (``provenance.json``); the
speed-and-memory headline of README.md and docs/speed-and-memory.md, from the committed benchmark results
(``benchmarks/headline.py``); and every measured number the pages mark with ``<!-- from: FILE; KEY -->``, from the
file it names (``benchmarks/doc_numbers.py``).

    python reports/regenerate.py                       # everything (about 16 min on the project's 2-core machine)
    python reports/regenerate.py --only default-run    # or the name of one report (COMPARES)
    python reports/regenerate.py --only headline       # the speed headline only: reads JSON, trains nothing
    python reports/regenerate.py --only doc-numbers    # the pages' marked numbers only: reads JSON, trains nothing

Every command runs under ``amapo.compare.reproduce.NUMERICS_ENV``, so that ``tests/test_reports_stay_true.py`` can
rerun a piece and get the same numbers on any machine with the same fingerprint. Commit the code first: the
provenance names the commit the numbers came from.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date
from pathlib import Path

from amapo.compare.reproduce import NUMERICS_ENV, PROVENANCE_FILE, fingerprint_here, read_provenance, run_amapo
from amapo.run_files import RESULTS_FILE, accuracy_by_set

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
README = ROOT / "README.md"
COMMAND = "python reports/regenerate.py"
# Each committed report: the folder under reports/ and the `amapo compare` options that make it (defaults otherwise).
# Each has discovery seeds and disjoint confirmation seeds (issue 29): a claim is established only if it holds,
# corrected for the number of claims, in both. Sizes keep the whole regeneration near 20 minutes.
DISCOVERY, CONFIRMATION = ["--seeds", "1", "2", "3", "4"], ["--confirm_seeds", "5", "6", "7", "8"]
COMPARES = {
    "builtin-compare": [*DISCOVERY, *CONFIRMATION],
    # the variant where chosen and rejected differ in length: the methods whose length claims it tests
    "builtin-lengths-compare": ["--recipe", "builtin-lengths", "--methods", "amapo", "simpo", "dpo", *DISCOVERY,
                                *CONFIRMATION],
    # the claims the defaults cannot tell, AMaPO against SimPO, at 10 + 10 seeds
    "builtin-amapo-simpo-20-seeds": ["--methods", "amapo", "simpo", "--seeds", *map(str, range(1, 11)),
                                     "--confirm_seeds", *map(str, range(11, 21))],
}  # fmt: skip
TABLE_START, TABLE_END = "<!-- default-run: written by reports/regenerate.py -->", "<!-- /default-run -->"


def benchmarks_script(name: str):
    """``benchmarks/NAME.py`` (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def benchmarks_headline():
    """``benchmarks/headline.py``."""
    return benchmarks_script("headline")


def write_doc_numbers() -> list[str]:
    """Rerender every ``<!-- from: ... -->`` region of the pages (``benchmarks/doc_numbers.py``); the pages changed."""
    return benchmarks_script("doc_numbers").write()


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def code_commit() -> str:
    """HEAD, marked when the code (anything but reports/ and README.md) has uncommitted changes."""
    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]  # "XY path": status, then path
    dirty = [path for path in changed if not path.startswith("reports/") and path != "README.md"]
    return git("rev-parse", "--short=12", "HEAD").strip() + (" + uncommitted changes" if dirty else "")


def peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2)


def default_run() -> dict:
    """``amapo train`` with no arguments: ranking accuracy per eval set, before and after training."""
    with tempfile.TemporaryDirectory() as tmp:
        run_amapo(["train", "--output_dir", f"{tmp}/run"])
        results = json.loads((Path(tmp) / "run" / RESULTS_FILE).read_text())
    before, after = accuracy_by_set(results["eval_before"]), accuracy_by_set(results["eval_after"])
    return {name: {"base": before[name], "trained": after[name]} for name in after}


def default_run_table(provenance: dict) -> str:
    """The README's default-run block, from ``provenance.json``."""
    lines = [TABLE_START, "", "| eval set | base model | trained |", "|---|---|---|"]
    for name, value in provenance["default_run"].items():
        lines.append(f"| {name} | {value['base']:.3f} | {value['trained']:.3f} |")
    note = (
        f"(ranking accuracy of the implicit reward, 256 pairs per set, seed 42; made by `{COMMAND}` from the code at "
        f"commit {provenance['default_run_commit']}, with 2 threads (`amapo.compare.reproduce.NUMERICS_ENV`), so that "
        "a test can rerun it; another CPU family's kernels give other numbers of the same kind)"
    )
    lines += ["", textwrap.fill(note, width=115), "", TABLE_END]
    return "\n".join(lines)


def write_readme_table(provenance: dict) -> None:
    text = README.read_text()
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no block between {TABLE_START!r} and {TABLE_END!r}")
    README.write_text(pattern.sub(lambda _: default_run_table(provenance), text))


def compare_report(name: str, options: list[str], commit: str) -> dict:
    """``amapo compare OPTIONS`` into reports/NAME; the runs' model weights are removed, the rest committed."""
    folder = REPORTS / name
    shutil.rmtree(folder, ignore_errors=True)
    started = time.monotonic()
    run_amapo(["compare", *options, "--output_dir", str(folder.relative_to(ROOT))], cwd=ROOT)
    wall = time.monotonic() - started
    shutil.rmtree(folder / "runs")
    command = " ".join(["amapo compare", *options])
    report = folder / "report.md"
    made = (
        f"Made by `{command}` (through `{COMMAND}`, with 2 threads) from the code at commit "
        f"{commit} on {date.today()}: {wall / 60:.1f} min wall on the project's 2-core CPU machine. The runs' model "
        "weights are not kept."
    )
    report.write_text(report.read_text().replace("# amapo compare\n", f"# amapo compare\n\n{made}\n", 1))
    return {"command": command, "wall_s": round(wall), "peak_rss_gb": peak_rss_gb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["default-run", "headline", "doc-numbers", *COMPARES],
                        help="Regenerate one piece only.")  # fmt: skip
    args = parser.parse_args()
    if args.only == "headline":  # from committed files: no run, so neither numerics nor provenance matter
        pages = benchmarks_headline().write()
        print(f"wrote the speed headline in {', '.join(pages)}", file=sys.stderr)
        return
    if args.only == "doc-numbers":  # the same: from committed files
        pages = write_doc_numbers()
        print(f"rewrote the marked numbers of {', '.join(pages) or 'no page (all were current)'}", file=sys.stderr)
        return
    path = REPORTS / PROVENANCE_FILE
    provenance = read_provenance(REPORTS) if path.exists() else {"reports": {}}
    fingerprint, commit = fingerprint_here(), code_commit()
    if provenance.get("numerics", fingerprint) != fingerprint and args.only:
        raise SystemExit(f"this machine's numerics ({fingerprint}) are not those of the committed numbers "
                         f"({provenance['numerics']}): regenerate everything, without --only")  # fmt: skip
    import torch
    import transformers

    provenance["reports"] = {k: v for k, v in provenance.get("reports", {}).items() if k in COMPARES}  # (renamed ones)
    provenance.update(
        command=COMMAND,
        numerics=fingerprint,
        numerics_env=NUMERICS_ENV,
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    )
    if args.only in (None, "default-run"):
        provenance["default_run"] = default_run()
        provenance["default_run_commit"] = commit
    for name, options in COMPARES.items():
        if args.only in (None, name):
            provenance["reports"][name] = {**compare_report(name, options, commit), "commit": commit}
    path.write_text(json.dumps(provenance, indent=2) + "\n")
    write_readme_table(provenance)
    wrote = f"wrote {path}, README.md's default-run table and {', '.join(provenance['reports'])}"
    if args.only is None:
        benchmarks_headline().write()
        wrote += ", the speed headline of README.md and docs/speed-and-memory.md"
    changed = write_doc_numbers()  # provenance.json and the reports' runs.json feed some of them
    wrote += f", and the marked numbers of {', '.join(changed) or 'no page (all were current)'}"
    print(wrote, file=sys.stderr)


if __name__ == "__main__":
    main()
