"""The committed numbers still come from the code: one cell of the committed comparison report (one method, one
seed) and the README's default run are rerun under the numerics that made them, and any number that differs fails
the test, naming the file to regenerate (``python reports/regenerate.py``). On a machine whose arithmetic differs
(another fingerprint: ``amapo.compare.reproduce``) the rerun cannot tell a stale number from other rounding, and
the test says so and skips."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from amapo.compare.config import RUNS_FILE, read_runs
from amapo.compare.reproduce import compare_args, fingerprint_here, read_provenance, run_amapo
from amapo.run_files import RESULTS_FILE, accuracy_by_set

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
REGENERATE = "python reports/regenerate.py"


def regenerate_script():
    spec = importlib.util.spec_from_file_location("regenerate", REPORTS / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def provenance():
    recorded = read_provenance(REPORTS)
    here = fingerprint_here()
    if here != recorded["numerics"]:
        pytest.skip(
            f"this machine's arithmetic (fingerprint {here}) is not the one that made the committed numbers "
            f"({recorded['numerics']}, torch {recorded['versions']['torch']}, transformers "
            f"{recorded['versions']['transformers']}): a rerun here cannot tell a stale number from other rounding"
        )
    return recorded


def differences(label: str, ours, committed) -> list[str]:
    """Every leaf where two JSON-like values differ, as 'label.key: rerun X, committed Y'."""
    if isinstance(ours, dict) and isinstance(committed, dict):
        out = []
        for key in sorted(set(ours) | set(committed)):
            out += differences(f"{label}.{key}", ours.get(key), committed.get(key))
        return out
    if isinstance(ours, str) and isinstance(committed, str) and len(ours) > 40:  # pairs ranked right, as 0/1
        flipped = sum(a != b for a, b in zip(ours, committed, strict=False)) + abs(len(ours) - len(committed))
        return [f"{label}: {flipped} pairs ranked differently"] if flipped else []
    return [] if ours == committed else [f"{label}: rerun {ours!r}, committed {committed!r}"]


def test_one_cell_of_the_committed_report_reruns_to_the_same_numbers(provenance, tmp_path):
    runs_file = REPORTS / "builtin-compare" / RUNS_FILE
    config, base, runs = read_runs(runs_file)
    cell = next(r for r in runs if r.method == "amapo" and r.seed == config.seeds[0])
    out = tmp_path / "cell"
    run_amapo(["compare", *compare_args(config), "--methods", "amapo", "--seeds", str(cell.seed),
               "--output_dir", str(out)])  # fmt: skip
    _, rerun_base, (rerun,) = read_runs(out / RUNS_FILE)
    measured = ("accuracy", "ranked_right", "gradient", "generation", "per_prompt", "curve")
    found = differences("base", rerun_base, base)
    found += differences(f"amapo seed {cell.seed}", {k: asdict(rerun)[k] for k in measured},
                         {k: asdict(cell)[k] for k in measured})  # fmt: skip
    assert not found, (
        f"{runs_file.relative_to(ROOT)} (and its report.md) no longer come from the code; regenerate them with "
        f"`{REGENERATE}`. Differences: " + "; ".join(found[:8])
    )


def test_the_default_run_reruns_to_the_readme_table(provenance, tmp_path):
    run_amapo(["train", "--output_dir", str(tmp_path / "run")])
    results = json.loads((tmp_path / "run" / RESULTS_FILE).read_text())
    before, after = accuracy_by_set(results["eval_before"]), accuracy_by_set(results["eval_after"])
    rerun = {name: {"base": before[name], "trained": after[name]} for name in after}
    found = differences("default run", rerun, provenance["default_run"])
    assert not found, (
        f"README.md's default-run table (and reports/provenance.json) no longer come from the code; regenerate them "
        f"with `{REGENERATE} --only default-run`. Differences: " + "; ".join(found)
    )


def test_the_readme_shows_the_recorded_default_run():
    """The README's table is the one the provenance file records (no hand edits, no stale copy)."""
    script = regenerate_script()
    recorded = read_provenance(REPORTS)
    assert script.default_run_table(recorded) in (ROOT / "README.md").read_text(), (
        f"README.md's default-run table differs from reports/provenance.json; rewrite it with `{REGENERATE} "
        "--only default-run`"
    )
