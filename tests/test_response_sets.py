"""Sets with several responses per prompt: RM-Bench (3 chosen x 3 rejected styles, per domain) and the scored
reward-robustness sets (K responses, gold scores). Their numbers against hand computations, the scoring layout
against the plain pairs path, and every bad row as one line naming file, row and field, before the model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmark_rows import rm_bench_rows, scored_rows
from command_line import error_line

import amapo.compare.run as compare_module
import amapo.evaluation.run as eval_module
from amapo.cli import main
from amapo.errors import UserError
from amapo.evaluation.response_sets import (
    RM_BENCH,
    SCORED_RESPONSES,
    ResponseSet,
    kendall_tau_b,
    response_pairs,
    response_scores,
    rm_bench_metrics,
    scored_response_metrics,
)
from amapo.evaluation.sets import check_named_sets, given_sets

# --- the numbers, by hand -----------------------------------------------------------------------------------------


def test_rm_bench_numbers_match_a_hand_computation():
    scores = np.array(
        [
            [3, 2, 1, 2.5, 0, 4],  # chat: chosen styles 0..2 against rejected styles 0..2
            [1, 1, 1, 0, 0, 0],  # chat: every comparison right
            [0, 0, 0, 1, 1, 1],  # math: every comparison wrong
        ],
        dtype=float,
    )
    out = rm_bench_metrics(scores, ["chat", "chat", "math"])
    # chat matrix: row A [[1,1,0],[0,1,0],[0,1,0]], row B all ones -> [[1,1,.5],[.5,1,.5],[.5,1,.5]]
    assert out["rm_bench/matrix/concise_vs_markdown"] == pytest.approx(0.25)  # (0.5 + 0) / 2 over chat and math
    assert out["rm_bench/chat/easy"] == pytest.approx(2 / 3)  # below the diagonal: .5, .5, 1
    assert out["rm_bench/chat/normal"] == pytest.approx(2.5 / 3)
    assert out["rm_bench/chat/hard"] == pytest.approx(2 / 3)  # above: 1, .5, .5
    assert out["rm_bench/chat"] == pytest.approx(13 / 18)
    assert out["rm_bench/math"] == 0.0 and out["rm_bench/math/hard"] == 0.0
    assert out["rm_bench/easy"] == pytest.approx(1 / 3) and out["rm_bench/normal"] == pytest.approx(5 / 12)
    assert out["rm_bench/hard"] == pytest.approx(1 / 3)
    assert out["accuracy"] == pytest.approx(13 / 36)  # RM-Bench's average: the mean of the domains' averages
    assert "rm_bench/code" not in out  # only the domains present count
    assert out["rm_bench/chat/prompts"] == 2 and out["prompts"] == 3


def test_rm_bench_ties_count_as_wrong():
    out = rm_bench_metrics(np.zeros((2, 6)), ["code", "safety"])
    assert out["accuracy"] == 0.0 and out["rm_bench/normal"] == 0.0  # strictly above, as RM-Bench compares


def test_kendall_tau_b_by_hand_and_by_definition():
    model = np.array([[1, 2, 3, 4], [4, 3, 2, 1], [1, 1, 2, 3], [1, 1, 1, 1]], dtype=float)
    gold = np.array([[1, 2, 3, 4]] * 4, dtype=float)
    taus = kendall_tau_b(model, gold)
    assert taus[0] == 1.0 and taus[1] == -1.0
    assert taus[2] == pytest.approx(5 / np.sqrt(5 * 6))  # one pair tied in the model: tau-b's correction
    assert np.isnan(taus[3])  # all tied: undefined, left out of the mean
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, (50, 5)).astype(float), rng.integers(0, 3, (50, 5)).astype(float)
    np.testing.assert_allclose(kendall_tau_b(a, b), [tau_b_by_definition(x, y) for x, y in zip(a, b, strict=True)])


def tau_b_by_definition(x, y) -> float:
    """Kendall's tau-b from its definition (Kendall 1945), pair by pair: (C - D) / sqrt((n0 - n1)(n0 - n2))."""
    n = len(x)
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            tied_x += x[i] == x[j]
            tied_y += y[i] == y[j]
            product = (x[i] - x[j]) * (y[i] - y[j])
            concordant += product > 0
            discordant += product < 0
    n0 = n * (n - 1) / 2
    denominator = ((n0 - tied_x) * (n0 - tied_y)) ** 0.5
    return (concordant - discordant) / denominator if denominator else float("nan")


def test_scored_response_metrics_by_hand():
    gold = np.array([[4, 3, 2, 1], [4, 4, 1, 1], [2, 2, 2, 2]], dtype=float)
    model = np.array([[0.1, 0.5, 0.2, 0.0], [1, 0, 0.5, 2], [1, 2, 3, 4]], dtype=float)
    out = scored_response_metrics(model, gold)
    # row 0: best (0.1) > worst (0.0): 1. row 1: bests {1, 0} vs worsts {0.5, 2}: 1 of 4 right. row 2: all tied.
    assert out["accuracy"] == pytest.approx((1 + 0.25) / 2)
    assert out["prompts/all_tied"] == 1
    # all pairs with different gold scores: row 0 has 6 (right: 0>2? .1<.2 no; 0>3 yes; 1>2 yes; 1>3 yes;
    # 2>3 yes; 0>1 no -> 4), row 1 has 4 (0>2 yes; 0>3 no; 1>2 no; 1>3 no -> 1)
    assert out["accuracy/all_pairs"] == pytest.approx(5 / 10)
    assert out["kendall_tau"] == pytest.approx(np.nanmean(kendall_tau_b(model, gold)))


def test_every_response_is_scored_once_and_mapped_back_for_an_odd_count():
    responses = ResponseSet(SCORED_RESPONSES, ["p", "q"], [["a", "b", "c"], ["d", "e", "f"]], ["r1", "r2", "r3"])
    pairs = response_pairs(responses, conversational=False)
    assert list(pairs["chosen"]) == ["a", "c", "d", "f"] and list(pairs["rejected"]) == ["b", "a", "e", "d"]
    rewards = response_scores(np.array([1.0, 3.0, 4.0, 6.0]), np.array([2.0, 9.0, 5.0, 9.0]), responses)
    np.testing.assert_array_equal(rewards, [[1, 2, 3], [4, 5, 6]])  # a repeated response keeps its first score
    messages = response_pairs(responses, conversational=True)
    assert messages[0]["prompt"] == [{"role": "user", "content": "p"}]
    assert messages[0]["chosen"] == [{"role": "assistant", "content": "a"}]


def test_rm_bench_responses_are_paired_as_rm_bench_pairs_them():
    """Chosen and rejected of the same style share a pair (and so its truncation), as in RM-Bench's own run."""
    texts = ["c0", "c1", "c2", "r0", "r1", "r2"]
    responses = ResponseSet(RM_BENCH, ["p"], [texts], [f"s{i}" for i in range(6)], domains=["chat"])
    pairs = response_pairs(responses, conversational=False)
    assert list(zip(pairs["chosen"], pairs["rejected"], strict=True)) == [("c0", "r0"), ("c1", "r1"), ("c2", "r2")]
    rewards = response_scores(np.array([0.0, 1.0, 2.0]), np.array([3.0, 4.0, 5.0]), responses)
    np.testing.assert_array_equal(rewards, [[0, 1, 2, 3, 4, 5]])


# --- amapo eval on the published schemas ---------------------------------------------------------------------------


def test_eval_scores_rm_bench_as_the_nine_pairs_it_stands_for(trained_model, tmp_path):
    """Each cell of the 3 x 3 matrix is the accuracy of the plain pairs (chosen style i, rejected style j), scored
    by the tested pairs path; and the written per-row scores give RM-Bench's numbers again."""
    rows = rm_bench_rows(8, domains=["chat"])
    bench = tmp_path / "total_dataset.json"
    bench.write_text(json.dumps(rows, indent=1))  # RM-Bench ships one JSON list
    sets = [f"rmb={bench}"]
    for i in range(3):
        for j in range(3):
            path = tmp_path / f"pairs_{i}{j}.jsonl"
            pairs = [
                {
                    "prompt": [{"role": "user", "content": r["prompt"]}],
                    "chosen": [{"role": "assistant", "content": r["chosen"][i]}],
                    "rejected": [{"role": "assistant", "content": r["rejected"][j]}],
                }
                for r in rows
            ]
            path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
            sets.append(f"p{i}{j}={path}")
    out = tmp_path / "eval"
    argv = ["eval", "--model_name_or_path", str(trained_model), "--output_dir", str(out), "--datasets", *sets]
    assert main(argv) == 0
    results = json.loads((out / "eval_results.json").read_text())
    styles = ("concise", "plain", "markdown")
    for i in range(3):
        for j in range(3):
            cell = results["rmb"][f"rm_bench/matrix/{styles[i]}_vs_{styles[j]}"]
            assert cell == pytest.approx(results[f"p{i}{j}"]["accuracy"])
    assert len({results[f"p{i}{j}"]["accuracy"] for i in range(3) for j in range(3)}) > 1  # the cells do differ
    scored = [json.loads(line) for line in (out / "scores_rmb.jsonl").read_text().splitlines()]
    assert [r["id"] for r in scored] == list(range(8))
    again = rm_bench_metrics(np.array([r["score_chosen"] + r["score_rejected"] for r in scored]), ["chat"] * 8)
    assert again["accuracy"] == pytest.approx(results["rmb"]["accuracy"])


def test_eval_reports_rm_bench_per_domain_and_the_scored_sets(trained_model, tmp_path, capsys):
    bench = tmp_path / "rmb.json"
    bench.write_text(json.dumps(rm_bench_rows(10)))
    ood = tmp_path / "ood.jsonl"
    ood.write_text("".join(json.dumps(r) + "\n" for r in scored_rows()))
    out = tmp_path / "eval"
    argv = ["eval", "--model_name_or_path", str(trained_model), "--output_dir", str(out), "--datasets"]
    assert main([*argv, f"rmb={bench}", f"response_ood={ood}"]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    for domain in ("chat", "math", "code", "safety"):
        assert 0 <= results["rmb"][f"rm_bench/{domain}/hard"] <= 1
    assert results["rmb"]["rm_bench/safety/prompts"] == 4  # safety-refuse and safety-response
    assert results["response_ood"]["prompts/all_tied"] == 1
    assert {"accuracy", "accuracy/all_pairs", "kendall_tau"} <= set(results["response_ood"])
    printed = capsys.readouterr().out
    assert "RM-Bench: rmb" in printed and "overall" in printed and "kendall_tau" in printed
    gold = [json.loads(line)["all_scores"] for line in (out / "scores_response_ood.jsonl").read_text().splitlines()]
    assert gold == [r["all_scores"] for r in scored_rows()]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda rows: rows[3].update(chosen=rows[3]["chosen"][:2]),
         "row 3, field 'chosen': RM-Bench rows hold 3 responses (concise, plain, markdown), got 2"),
        (lambda rows: rows[4].pop("domain"), "row 4, field 'domain': missing: RM-Bench rows name their domain"),
        (lambda rows: rows[2].update(domain="poetry"), "row 2, field 'domain': 'poetry' is not an RM-Bench domain"),
        (lambda rows: rows[1]["rejected"].__setitem__(2, ""),
         "row 1, field 'rejected': response 2 (markdown) must be a non-empty string"),
    ],
)  # fmt: skip
def test_bad_rm_bench_rows_are_one_line_before_the_model_loads(
    trained_model, tmp_path, capsys, monkeypatch, change, expected
):
    monkeypatch.setattr(eval_module, "load_models", lambda *a, **k: pytest.fail("the model loaded first"))
    rows = rm_bench_rows(6)
    change(rows)
    bench = tmp_path / "rmb.json"
    bench.write_text(json.dumps(rows))
    assert main(["eval", "--model_name_or_path", str(trained_model), "--datasets", f"rmb={bench}"]) == 2
    assert error_line(capsys, "eval").startswith(f"--datasets rmb={bench}@train: {expected}")


def test_a_bad_rm_bench_file_prints_exactly_one_line(trained_model, tmp_path):
    """The whole stderr of the command is the error: no "Generating train split" bar from ``datasets`` before it."""
    rows = rm_bench_rows(6)
    rows[3]["chosen"] = rows[3]["chosen"][:2]
    bench = tmp_path / "rmb.json"
    bench.write_text(json.dumps(rows))
    command = [sys.executable, "-m", "amapo.cli", "eval", "--model_name_or_path", str(trained_model), "--datasets"]
    done = subprocess.run([*command, f"rmb={bench}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"amapo eval: error: --datasets rmb={bench}@train: row 3, field 'chosen': RM-Bench rows hold 3 responses "
        "(concise, plain, markdown), got 2"
    ]


def test_bad_scored_rows_and_forced_formats_are_one_line(trained_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(eval_module, "load_models", lambda *a, **k: pytest.fail("the model loaded first"))
    rows = scored_rows()
    rows[2]["all_scores"] = [1.0, 2.0]
    ood = tmp_path / "ood.jsonl"
    ood.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["eval", "--model_name_or_path", str(trained_model), "--datasets"]
    assert main([*argv, f"ood={ood}"]) == 2
    assert error_line(capsys, "eval") == (
        f"--datasets ood={ood}@train: row 2, field 'all_scores': must list one gold score per response (4), "
        "got 2 values"
    )
    assert main([*argv, f"ood=rm-bench:{ood}"]) == 2  # named as RM-Bench, it is checked as RM-Bench
    assert error_line(capsys, "eval") == f"--datasets ood=rm-bench:{ood}@train: row 0, field 'prompt': missing"


def test_a_tokenization_error_names_the_sets_own_row_and_field(trained_model, tmp_path, capsys):
    """Responses are tokenized as pairs (chosen[i], rejected[i]); an error names RM-Bench's row and response."""
    rows = rm_bench_rows(4)
    rows[2]["rejected"][1] = "It is <s> here."  # the BOS text inside a response
    bench = tmp_path / "rmb.json"
    bench.write_text(json.dumps(rows))
    assert main(["eval", "--model_name_or_path", str(trained_model), "--datasets", f"rmb={bench}"]) == 2
    assert error_line(capsys, "eval") == (
        f"--datasets rmb={bench}@train: row 2, field 'rejected[1]': holds the BOS token "
        "(the text contains the BOS text)"
    )


def test_shorthands_name_the_papers_sets():
    sets = given_sets("datasets", ["rm-bench", "rm-robustness", "mine=./x.jsonl"])
    assert [s.name for s in sets] == [
        "rm_bench", "in_distribution", "prompt_ood", "response_ood", "mutual_ood", "mine"
    ]  # fmt: skip
    assert sets[0].source == "THU-KEG/RM-Bench" and sets[0].format == RM_BENCH
    assert sets[4].source == "rm-robustness/ultrafeedback-valid-4-mutual-ood" and sets[4].format == "auto"
    assert given_sets("datasets", ["x=scored-responses:./a.jsonl@train[:5]"])[0].format == SCORED_RESPONSES
    with pytest.raises(UserError, match="names the set 'in_distribution' twice"):
        check_named_sets("datasets", ["rm-robustness", "in_distribution=./a.jsonl"])
    with pytest.raises(UserError, match="or rm-bench or rm-robustness, got 'rmbench'"):
        check_named_sets("datasets", ["rmbench"])


def test_a_misspelt_format_is_named_with_the_closest_one(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"'rm-bnch' is not a set format \(did you mean rm-bench:\?\)"):
        check_named_sets("datasets", ["x=rm-bnch:./rmb.json"])
    with pytest.raises(UserError, match=r"did you mean scored-responses:\?"):
        check_named_sets("datasets", ["x=scored-response:./ood.jsonl@train[:5]"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pair:s.jsonl").write_text("")  # a file whose name only looks like FORMAT:SOURCE is a file
    check_named_sets("datasets", ["x=pair:s.jsonl", "y=org/pair:x", "z=rm-bench:./rmb.json"])


def test_analyze_refuses_an_rm_bench_set(trained_model, tmp_path, capsys):
    bench = tmp_path / "rmb.json"
    bench.write_text(json.dumps(rm_bench_rows(4)))
    argv = ["analyze", "--model_name_or_path", str(trained_model), "--dataset", str(bench)]
    assert main(argv) == 2
    assert "a rm-bench set holds several responses per prompt, not preference pairs" in error_line(capsys, "analyze")


def test_compare_refuses_a_bad_benchmark_row_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare_module, "run_training", lambda *a, **k: pytest.fail("a run trained first"))
    rows = rm_bench_rows(4)
    rows[1].pop("domain")
    bench = tmp_path / "rmb.json"
    bench.write_text(json.dumps(rows))
    out = tmp_path / "report"
    argv = ["compare", "--methods", "amapo", "--seeds", "1", "--output_dir", str(out)]
    assert main([*argv, "--eval_datasets", f"rmb={bench}"]) == 2
    assert error_line(capsys, "compare").startswith(f"--eval_datasets rmb={bench}@train: row 1, field 'domain'")
    assert main([*argv, "--eval_datasets", f"rmb={tmp_path / 'none.json'}"]) == 2
    assert "no such file or folder" in error_line(capsys, "compare")
    assert not Path(out).exists()


def test_each_response_is_scored_by_the_methods_reward(trained_model, tmp_path):
    """DPO's reward beta log(pi/pi_ref) is 0 for every response when the reference is the policy itself, so every
    comparison ties and RM-Bench (strictly higher) counts none; SimPO's beta/|y| log pi is the mean log-prob."""
    bench = tmp_path / "rmb.json"
    bench.write_text(json.dumps(rm_bench_rows(5)))
    argv = ["eval", "--model_name_or_path", str(trained_model), "--datasets", f"rmb={bench}", "--output_dir"]
    ref = ["--ref_model_name_or_path", str(trained_model)]
    assert main([*argv, str(tmp_path / "dpo"), "--method", "dpo", *ref]) == 0
    dpo = [json.loads(line) for line in (tmp_path / "dpo" / "scores_rmb.jsonl").read_text().splitlines()]
    assert all(s == 0.0 for row in dpo for s in row["score_chosen"] + row["score_rejected"])
    assert json.loads((tmp_path / "dpo" / "eval_results.json").read_text())["rmb"]["accuracy"] == 0.0
    assert main([*argv, str(tmp_path / "simpo"), "--method", "simpo", "--beta", "1"]) == 0
    simpo = [json.loads(line) for line in (tmp_path / "simpo" / "scores_rmb.jsonl").read_text().splitlines()]
    assert main([*argv, str(tmp_path / "simpo3"), "--method", "simpo", "--beta", "3"]) == 0
    simpo3 = [json.loads(line) for line in (tmp_path / "simpo3" / "scores_rmb.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(
        [r["score_chosen"] for r in simpo3], 3 * np.asarray([r["score_chosen"] for r in simpo]), rtol=1e-5
    )
    assert all(s < 0 for row in simpo for s in row["score_chosen"])  # a mean log-prob
