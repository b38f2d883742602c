"""``benchmarks/memory_vs_length.py`` (issue 35): the fit of peak memory against pair length, the bisection for the
longest length that fits a cap, the cap a CPU worker is killed above, and the script end to end at toy size (a sweep,
then a second run that reuses it at a cap between two of its lengths and bisects)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import memory_vs_length as mvl  # noqa: E402

GB, MIB = 1024**3, 1024**2


# --- the fit ---------------------------------------------------------------------------------------------------------


def test_the_fit_recovers_a_quadratic_in_its_units_and_solves_for_the_length_at_a_cap():
    a, b, c = 0.5 * GB, 300 * MIB / 1024, 20 * MIB / 1024**2  # 0.5 GiB + 300 MiB per 1,024 words + 20 MiB per (1,024)^2
    lengths = [512, 1024, 2048, 4096, 8192]
    fit = mvl.fit_peak([(n, a + b * n + c * n * n) for n in lengths])
    assert fit["terms"] == 3 and fit["points"] == 5
    assert fit["a_gib"] == pytest.approx(0.5) and fit["b_mib_per_1024_words"] == pytest.approx(300)
    assert fit["c_mib_per_1024_words2"] == pytest.approx(20) and fit["max_residual_bytes"] < 1e-3 * GB
    assert mvl.predict(fit, 3000) == pytest.approx(a + b * 3000 + c * 3000**2)
    at = mvl.length_at(fit, 16 * GB)  # 0.5 GiB + 0.293 x + 0.0195 x^2 = 16 GiB, x in 1,024 words: x = 21.66
    assert mvl.predict(fit, at) == pytest.approx(16 * GB) and at == pytest.approx(21.66 * 1024, rel=1e-3)


def test_the_fit_with_two_lengths_is_linear_with_one_none_and_least_squares_with_noise():
    linear = mvl.fit_peak([(1024, 2 * GB), (2048, 3 * GB)])
    assert linear["terms"] == 2 and linear["c_bytes_per_word2"] == 0
    assert linear["b_mib_per_1024_words"] == pytest.approx(1024)
    assert mvl.length_at(linear, 16 * GB) == pytest.approx(1024 * 15)
    assert mvl.fit_peak([(1024, GB)]) is None and mvl.length_at(None, GB) is None
    flat = mvl.fit_peak([(1024, GB), (2048, GB)])
    assert mvl.length_at(flat, 16 * GB) is None  # memory that does not grow never reaches the cap
    noisy = [(n, GB + n * MIB + (1 if i % 2 else -1) * 10 * MIB) for i, n in enumerate([256, 512, 1024, 2048])]
    fit = mvl.fit_peak(noisy)  # four points, three terms: a residual, at most the noise
    assert 0 < fit["max_residual_bytes"] <= 20 * MIB
    assert all(abs(mvl.predict(fit, n) - (GB + n * MIB)) <= 20 * MIB for n in range(256, 2049, 64))


# --- the bisection ---------------------------------------------------------------------------------------------------


def fits_below(limit: int, calls: list[int]):
    def fits(length: int) -> bool:
        calls.append(length)
        return length <= limit

    return fits


def test_bisection_inside_the_sweeps_bracket_halves_it_to_the_tolerance_and_never_remeasures_a_known_length():
    calls: list[int] = []
    found = mvl.find_longest(fits_below(300, calls), {128: True, 256: True, 512: False}, guess=290, limit=2048,
                             tolerance=0.1, max_probes=8)  # fmt: skip
    assert calls == [384, 320, 288, 304] and found["probes"] == [[384, False], [320, False], [288, True], [304, False]]
    assert (found["longest"], found["shortest_not_fitting"]) == (288, 304) and found["stopped"] == "bracket within 10%"
    assert not set(calls) & {128, 256, 512}


def test_bisection_when_every_length_fits_probes_just_past_the_fits_guess_then_brackets():
    calls: list[int] = []
    found = mvl.find_longest(fits_below(1000, calls), {128: True, 256: True}, guess=1000, limit=4096,
                             tolerance=0.1, max_probes=8)  # fmt: skip
    assert calls[0] == 1056  # 1000 * 1.05, up to a multiple of 16: the bracket closes on the first probe
    assert found["longest"] <= 1000 < found["shortest_not_fitting"] <= found["longest"] * 1.1
    calls.clear()  # without a guess: twice the longest that fits, until one does not
    found = mvl.find_longest(fits_below(1000, calls), {128: True, 256: True}, guess=None, limit=4096,
                             tolerance=0.1, max_probes=8)  # fmt: skip
    assert calls[:2] == [512, 1024] and found["longest"] <= 1000 < found["shortest_not_fitting"]


def test_bisection_stops_at_the_limit_the_probe_count_a_failed_probe_and_reports_nothing_fits():
    found = mvl.find_longest(fits_below(10**6, []), {512: True}, guess=None, limit=2048, tolerance=0.1, max_probes=8)
    assert (found["longest"], found["shortest_not_fitting"]) == (2048, None) and "longest length" in found["stopped"]
    calls: list[int] = []
    found = mvl.find_longest(fits_below(0, calls), {128: False}, guess=None, limit=2048, tolerance=0.1, max_probes=2)
    assert calls == [64, 32] and (found["longest"], found["shortest_not_fitting"]) == (0, 32)
    assert found["stopped"] == "2 probes (--max_probes)"
    found = mvl.find_longest(lambda n: None, {128: True, 512: False}, guess=None, limit=2048, tolerance=0.1,
                             max_probes=8)  # fmt: skip
    assert found["probes"] == [[320, None]] and (found["longest"], found["shortest_not_fitting"]) == (128, 512)
    assert "failed (not out of memory)" in found["stopped"]
    found = mvl.find_longest(fits_below(300, []), {128: True, 512: False}, guess=None, limit=2048, tolerance=0.1,
                             max_probes=0)  # fmt: skip
    assert found == {"longest": 128, "shortest_not_fitting": 512, "probes": [], "stopped": "no probes (--max_probes 0)"}
    found = mvl.find_longest(fits_below(300, []), {128: None}, guess=None, limit=2048, tolerance=0.1, max_probes=4)
    assert found["probes"] == [] and found["stopped"].startswith("no length ran")


def test_a_point_fits_when_it_ran_under_the_cap_and_resume_reuses_only_what_still_holds_at_the_new_cap():
    ran = {"ok": True, "peak_bytes": 3 * GB}
    assert mvl.fits_cap(ran, 4 * GB) and mvl.fits_cap(ran, 2 * GB) is False
    assert mvl.fits_cap({"ok": False, "out_of_memory": True}, 4 * GB) is False
    assert mvl.fits_cap({"ok": False, "error": "ValueError"}, 4 * GB) is None
    stopped = {"ok": False, "out_of_memory": True, "over_memory_cap": 4.2 * GB}  # killed by a 4 GiB cap
    assert mvl.reusable(ran, 1 * GB) and mvl.reusable(stopped, 3 * GB) and not mvl.reusable(stopped, 8 * GB)
    assert not mvl.reusable({"ok": False, "error": "ValueError"}, 4 * GB)


def test_the_goals_are_met_not_met_or_undecided_by_what_the_brackets_allow():
    def report(ours_peak, theirs_peak, ours_range, theirs_range):
        point = lambda peak: {"ok": True, "fits": peak <= 16 * GB, "peak_bytes": peak}  # noqa: E731
        bracket = lambda pair: dict(zip(("longest", "shortest_not_fitting"), pair, strict=True))  # noqa: E731
        return {"cap_bytes": 16 * GB, "settings": {"goal_length": 2048},
                "points": {"amapo-amapo": {"2048": point(ours_peak)}, "trl-dpo": {"2048": point(theirs_peak)}},
                "longest": {"amapo-amapo": bracket(ours_range), "trl-dpo": bracket(theirs_range)}}  # fmt: skip

    peak, length = mvl.goals(report(2 * GB, 5 * GB, (9000, 9500), (4000, 4400)))
    assert peak["met"] and peak["value"] == "0.40x" and length["met"]  # 9000 / 4400 >= 2
    peak, length = mvl.goals(report(3 * GB, 5 * GB, (8000, 8500), (4000, 4400)))
    assert peak["met"] is False and length["met"] is None  # 8000/4400 < 2 < 8500/4000: within the resolution
    _, length = mvl.goals(report(3 * GB, 5 * GB, (7000, 7600), (4000, 4400)))
    assert length["met"] is False  # 7600 / 4000 < 2
    peak, _ = mvl.goals(report(4 * GB, 20 * GB, (7000, 7600), (4000, 4400)))  # TRL DPO over the 16 GiB cap
    assert peak["met"] and peak["value"].startswith("< 0.25x")  # 4 / 16: whatever TRL's peak above 16 GiB is
    peak, _ = mvl.goals(report(9 * GB, 20 * GB, (7000, 7600), (4000, 4400)))
    assert peak["met"] is None and "does not fit" in peak["value"]  # 9 / 16 > 0.5: no verdict from the bound


# --- the memory cap a CPU worker is killed above ----------------------------------------------------------------------


def test_a_capped_process_is_killed_soon_after_its_rss_passes_the_cap_and_one_under_it_runs_to_the_end():
    pytest.importorskip("psutil")
    from prefstep.runner import run_capped

    hog = [sys.executable, "-c", "import time; x = b'1' * (300 * 2**20); print('allocated', flush=True); "
           "time.sleep(30)"]  # fmt: skip
    start = time.perf_counter()
    stdout, _, returncode, over = run_capped(hog, timeout=60, env={}, memory_cap=100 * MIB)
    assert time.perf_counter() - start < 10 and returncode == -9 and over > 100 * MIB
    stdout, _, returncode, over = run_capped([sys.executable, "-c", "print('small')"], timeout=60, env={},
                                             memory_cap=2 * GB)  # fmt: skip
    assert (stdout.strip(), returncode, over) == ("small", 0, None)
    _, _, returncode, over = run_capped([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1, env={},
                                        memory_cap=2 * GB)  # fmt: skip
    assert returncode is None and over is None  # a timeout, not the cap


# --- end to end -------------------------------------------------------------------------------------------------------

TOY = ["--device", "cpu", "--vocab", "311", "--hidden_size", "32", "--num_layers", "2", "--intermediate_size", "64",
       "--num_heads", "4", "--num_kv_heads", "2", "--threads", "1", "--frameworks", "amapo-amapo"]  # fmt: skip


def run_script(*args) -> str:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "memory_vs_length.py"), *TOY, *map(str, args)],
                            capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_the_script_sweeps_fits_plots_then_reuses_the_sweep_at_a_lower_cap_and_bisects_to_the_boundary(tmp_path):
    sweep = tmp_path / "sweep.json"
    run_script("--lengths", 128, 256, 512, "--max_probes", 0, "--out", sweep, "--workdir", tmp_path / "w1")
    report = json.loads(sweep.read_text())
    points = report["points"]["amapo-amapo"]
    assert all(points[str(n)]["ok"] and points[str(n)]["fits"] and points[str(n)]["tokens_per_s"] > 0
               for n in (128, 256, 512))  # fmt: skip
    fit = report["fits"]["amapo-amapo"]  # three lengths, three terms: it passes through every point
    assert fit["terms"] == 3 and all(mvl.predict(fit, n) == pytest.approx(points[str(n)]["peak_bytes"], rel=1e-6)
                                     for n in (128, 256, 512))  # fmt: skip
    assert report["longest"]["amapo-amapo"]["longest"] == 512 and report["settings"]["gradient_checkpointing"] is False
    assert sweep.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = sweep.with_suffix(".md").read_text()
    assert "| framework | 128 | 256 | 512 | a GiB | b MiB per 1,024 words |" in table and "| >= 512 |" in table

    # a cap between the peaks at 256 and 512 words: the sweep is reused, 512 no longer fits, one probe at 384
    peak = {n: points[str(n)]["peak_bytes"] for n in (128, 256, 512)}
    assert peak[512] > max(peak[128], peak[256]) + MIB, peak  # the toy's mask and attention grow with length
    cap = (max(peak[128], peak[256]) + peak[512]) / 2
    bisect = tmp_path / "bisect.json"
    stdout = run_script("--lengths", 128, 256, 512, "--cap_gib", cap / GB, "--max_probes", 2, "--tolerance", 0.5,
                        "--resume", sweep, "--out", bisect, "--workdir", tmp_path / "w2")  # fmt: skip
    report = json.loads(bisect.read_text())
    points = report["points"]["amapo-amapo"]
    assert all(points[str(n)]["reused"] == str(sweep) for n in (128, 256, 512)) and points["512"]["fits"] is False
    found = report["longest"]["amapo-amapo"]
    ((length, fits),) = found["probes"]  # (384, whether it fit)
    assert length == 384 and found["stopped"] == "bracket within 50%"
    assert (found["longest"], found["shortest_not_fitting"]) == ((384, 512) if fits else (256, 384))
    probe = points["384"]
    assert probe["kind"] == "probe" and "reused" not in probe
    assert fits == bool(probe["ok"] and probe["peak_bytes"] <= cap)  # ran under the cap, or stopped / over it
    table = bisect.with_suffix(".md").read_text()
    assert f"| {found['longest']} ({found['shortest_not_fitting']} does not fit) |" in table
    assert f"384 {'fits' if fits else 'no'}; stopped: bracket within 50%" in table
    assert "goal: amapo-amapo's peak at 2,048 words per pair <= 0.5x trl-dpo's: not measured" in stdout
    assert math.isclose(report["cap_bytes"], cap, rel_tol=1e-6)


def test_the_plot_is_drawn_where_no_point_ran(tmp_path):
    """A run whose only worker failed (here: timed out) still writes its plot (it crashed on the empty log axis)."""
    report = {
        "cap_bytes": 16 * 2**30, "settings": {"device": "cpu"}, "fits": {},
        "points": {"amapo-amapo": {"16384": {"length": 16384, "kind": "sweep", "ok": False, "fits": None,
                                             "error": "timed out after 3600 s"}}},
    }  # fmt: skip
    mvl.plot(report, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0
