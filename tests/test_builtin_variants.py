"""The built-in task's variants and held-out pools (issue 17): what each variant exercises, measured on its data,
and pools that grow without changing what smaller sets held."""

from __future__ import annotations

from pathlib import Path

import pytest

from amapo.builtin import resolve_source
from amapo.builtin.task import EVAL_SETS, TaskSpec, generate_task, task_profile
from amapo.cli import main
from amapo.data import load_preference_dataset


@pytest.fixture(scope="module")
def small_task():
    return generate_task(TaskSpec(train_pairs=512, eval_pairs=64, eval_pool=512, sft_examples=256))


def test_reverse_never_differs_in_length_and_reverse_lengths_mostly_does(small_task):
    plain, lengths = small_task["reverse"], small_task["reverse-lengths"]
    assert task_profile(plain["train"])["length_differs"] == 0.0  # substitutions keep the length
    assert task_profile(lengths["train"])["length_differs"] > 0.4
    assert task_profile(lengths["response_ood"])["length_differs"] == 1.0  # padded or cut: only the length is wrong
    for pairs in (plain["train"], lengths["train"]):
        profile = task_profile(pairs)
        assert 0.03 < profile["near_ties"] < 0.3  # near-ties and clear pairs both present
        assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)


def test_no_held_out_prompt_was_seen_in_sft_or_training(small_task):
    seen = {row["prompt"] for row in small_task["reverse"]["sft"]}
    for variant in small_task.values():
        seen |= {pair["prompt"] for pair in variant["train"]}
    for variant in small_task.values():
        for name in EVAL_SETS:
            assert not seen & {pair["prompt"] for pair in variant[name]}


def test_growing_the_pools_keeps_the_first_pairs():
    small = generate_task(TaskSpec(train_pairs=64, eval_pairs=16, eval_pool=32, sft_examples=64))
    large = generate_task(TaskSpec(train_pairs=64, eval_pairs=16, eval_pool=96, sft_examples=64))
    assert small["reverse"]["train"] == large["reverse"]["train"]
    for name in EVAL_SETS:
        assert small["reverse"][name][:16] == large["reverse"][name][:16]  # the recipes' prefix
        assert len(large["reverse"][name]) == 96


def test_builtin_sources_of_both_variants_resolve_to_their_pools():
    for source in ("builtin:reverse/in_distribution", "builtin:reverse-lengths/response_ood"):
        assert len(load_preference_dataset(resolve_source(source), split="train")) == TaskSpec().eval_pool
    recipe_sized = load_preference_dataset(resolve_source("builtin:reverse-lengths"), split="train[:256]")
    assert task_profile(list(recipe_sized))["length_differs"] > 0.4
    assert Path(resolve_source("builtin:reverse-lengths")).parent.name == "reverse-lengths"


def test_compare_refuses_more_eval_pairs_than_the_pools_hold_before_training(tmp_path, capsys):
    argv = ["compare", "--methods", "amapo", "--eval_pairs", "9000", "--output_dir", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "amapo compare: error: --eval_pairs 9000: the built-in held-out sets hold 8192 pairs each; give at most 8192"
    )
    assert not (tmp_path / "out").exists()
    assert main(["compare", "--recipe", "builtin-lengths", "--eval_pairs", "0"]) == 2
    assert "--eval_pairs must be >= 1" in capsys.readouterr().err
