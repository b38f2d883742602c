"""``--chat_rendering handbook``: the token sequences of AMaPO's released trainer, token by token.

The fixture (``tests/data/handbook``, see its README) holds what the release's own rendering and tokenization code
produced for these pairs, with four chat templates and three length limits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from amapo.data import load_preference_dataset, tokenize_dataset
from amapo.data.handbook import truncate_pair

FIXTURE = Path(__file__).parent / "data" / "handbook"
CASES = json.loads((FIXTURE / "release_tokens.json").read_text())["cases"]


def fixture_tokenizer(case: dict) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast.from_pretrained(FIXTURE / "tokenizer")
    tokenizer.bos_token, tokenizer.eos_token = case["bos_token"], case["eos_token"]
    tokenizer.chat_template = case["chat_template"]
    return tokenizer


def tokenize(case: dict, rendering: str = "handbook"):
    source = FIXTURE / ("plain_pairs.jsonl" if case["template"] == "plain" else "pairs.jsonl")
    pairs = load_preference_dataset(str(source), split="train")
    return tokenize_dataset(
        pairs,
        fixture_tokenizer(case),
        max_length=case["max_length"],
        max_prompt_length=case["max_prompt_length"],
        rendering=rendering,
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['template']}-{c['max_length']}")
def test_handbook_rendering_gives_the_release_tokens(case):
    for index, (ours, release) in enumerate(zip(tokenize(case), case["rows"], strict=True)):
        if release["chosen_prompt_ids"] != release["rejected_prompt_ids"]:
            continue  # one response merged with the prompt: the next test
        assert ours["prompt_input_ids"] == release["chosen_prompt_ids"], index
        assert ours["chosen_input_ids"] == release["chosen_ids"], index
        assert ours["rejected_input_ids"] == release["rejected_ids"], index


def test_one_sided_seam_merge_keeps_the_release_sequences():
    """The release gives chosen and rejected their own prompts here; amapo shares the shorter one, so the model
    reads the same tokens and only the unmerged response counts the prompt's last token as its own."""
    case = next(c for c in CASES if c["template"] == "plain")
    ours = tokenize(case)
    one_sided = [i for i, r in enumerate(case["rows"]) if r["chosen_prompt_ids"] != r["rejected_prompt_ids"]]
    assert one_sided, "the fixture has a one-sided merge"
    for index in one_sided:
        release, row = case["rows"][index], ours[index]
        for side in ("chosen", "rejected"):
            sequence = release[f"{side}_prompt_ids"] + release[f"{side}_ids"]
            assert row["prompt_input_ids"] + row[f"{side}_input_ids"] == sequence
        extra = abs(len(release["chosen_prompt_ids"]) - len(release["rejected_prompt_ids"]))
        lengths = [len(row[f"{s}_input_ids"]) - len(release[f"{s}_ids"]) for s in ("chosen", "rejected")]
        assert sorted(lengths) == [0, extra] == [0, 1]


def test_amapo_rendering_differs_from_the_release():
    """The default rendering keeps the assistant header in the prompt: another |y| (why the switch exists)."""
    case = next(c for c in CASES if c["template"] == "zephyr" and c["max_length"] == 4096)
    ours, handbook = tokenize(case, "amapo"), tokenize(case, "handbook")
    for a, h in zip(ours, handbook, strict=True):
        assert len(a["chosen_input_ids"]) < len(h["chosen_input_ids"])
        assert a["prompt_input_ids"] + a["chosen_input_ids"] != h["prompt_input_ids"] + h["chosen_input_ids"]


def test_release_truncation_rule_by_hand():
    prompt, chosen, rejected = list(range(10)), [20, 21, 22, 23, 24, 25], [30, 31]
    # 10 + 6 > 12: prompt to its last 5 (keep_end) -> 5 + 6 > 12? no, 11 <= 12: responses kept
    out = truncate_pair(prompt, chosen, rejected, max_length=12, max_prompt_length=5)
    assert out["prompt_input_ids"] == [5, 6, 7, 8, 9] and out["chosen_input_ids"] == chosen
    assert (out["prompt_truncated"], out["chosen_truncated"]) == (True, False)
    # keep_start keeps the first tokens
    assert truncate_pair(prompt, chosen, rejected, max_length=12, max_prompt_length=5, truncation_mode="keep_start")[
        "prompt_input_ids"
    ] == [0, 1, 2, 3, 4]
    # a short prompt (4 <= 8) is kept, yet both responses go to max_length - max_prompt_length = 2, not to 10 - 4
    out = truncate_pair([1, 2, 3, 4], chosen, rejected, max_length=8, max_prompt_length=6)
    assert out["prompt_input_ids"] == [1, 2, 3, 4] and not out["prompt_truncated"]
    assert out["chosen_input_ids"] == [20, 21] and out["rejected_input_ids"] == [30, 31]
    assert (out["chosen_truncated"], out["rejected_truncated"]) == (True, False)


def test_handbook_conversations_need_a_chat_template():
    case = next(c for c in CASES if c["template"] == "zephyr")
    tokenizer = fixture_tokenizer({**case, "chat_template": None})
    pairs = load_preference_dataset(str(FIXTURE / "pairs.jsonl"), split="train")
    with pytest.raises(ValueError, match="no chat template"):
        tokenize_dataset(pairs, tokenizer, max_length=64, max_prompt_length=32, rendering="handbook")


def test_bad_rendering_name_is_refused():
    case = CASES[0]
    pairs = load_preference_dataset(str(FIXTURE / "pairs.jsonl"), split="train")
    with pytest.raises(ValueError, match="chat_rendering"):
        tokenize_dataset(pairs, fixture_tokenizer(case), max_length=64, max_prompt_length=32, rendering="trl")
