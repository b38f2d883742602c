"""The [2B, T] batch: chosen rows then rejected rows, right padding, and a response mask that covers exactly
the response tokens (EOS included), never the prompt or the padding."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from amapo.builtin.tokenizer import build_byte_tokenizer
from amapo.data import DataError, PreferenceCollator, tokenize_pair

BOS, EOS, PAD = 257, 258, 256
TOKENIZER = build_byte_tokenizer(chat_template=True)

# Two hand-made pairs (EOS = 9, pad = 0).
FEATURES = [
    {"prompt_input_ids": [1, 2], "chosen_input_ids": [3, 4, 9], "rejected_input_ids": [5, 9], "offset": 0.5},
    {"prompt_input_ids": [1], "chosen_input_ids": [6, 9], "rejected_input_ids": [7, 8, 8, 9], "offset": 2.0},
]


def test_rows_are_chosen_then_rejected_right_padded_to_the_longest():
    batch = PreferenceCollator(pad_token_id=0, extra_columns=["offset"])(FEATURES)
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 4, 9],
        [1, 6, 9, 0, 0],
        [1, 2, 5, 9, 0],
        [1, 7, 8, 8, 9],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch["response_mask"].int().tolist() == [
        [0, 0, 1, 1, 1],
        [0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 1, 1, 1, 1],
    ]
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    assert batch["response_mask"].dtype == torch.bool
    assert batch["offset"].dtype == torch.float32 and batch["offset"].tolist() == [0.5, 2.0]


def test_missing_extra_column_and_missing_pad_id_are_clear_errors():
    with pytest.raises(KeyError, match="ref_chosen_logps"):
        PreferenceCollator(0, extra_columns=["ref_chosen_logps"])(FEATURES)
    with pytest.raises(ValueError, match="pad_token"):
        PreferenceCollator(None)


def test_tokenized_pairs_mask_exactly_their_responses():
    rows = [
        {"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " five"},
        {"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go."},
    ]
    features = [tokenize_pair(row, TOKENIZER, max_length=64, max_prompt_length=32) for row in rows]
    batch = PreferenceCollator(PAD)(features)
    order = [("chosen", 0), ("chosen", 1), ("rejected", 0), ("rejected", 1)]
    for i, (field, pair) in enumerate(order):
        response = features[pair][f"{field}_input_ids"]
        assert batch["input_ids"][i][batch["response_mask"][i]].tolist() == response
        assert response[-1] == EOS and response.count(EOS) == 1
        first = len(features[pair]["prompt_input_ids"])
        assert not batch["response_mask"][i, :first].any()
        assert not batch["response_mask"][i][batch["attention_mask"][i] == 0].any()
    assert batch["input_ids"][0].tolist()[:1] == [BOS] and (batch["input_ids"][:, 1:] == BOS).sum() == 0


# Random unicode, plus the special tokens' texts and whitespace that a dataset can hold.
pieces = st.one_of(st.text(max_size=12), st.sampled_from(["<s>", "</s>", "<pad>", " ", "\n", "  "]))
texts = st.lists(pieces, max_size=5).map("".join)
# Mostly usable responses (first character not whitespace), sometimes degenerate ones that must raise.
nonblank = st.tuples(st.characters(exclude_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), texts).map("".join)
responses = st.integers(0, 3).flatmap(lambda pick: texts if pick == 0 else nonblank)


@settings(max_examples=150, deadline=None)
@given(prompt=texts, chosen=responses, rejected=responses, max_length=st.integers(6, 48))
def test_random_plain_pairs_tokenize_with_exact_masks_or_raise_data_error(prompt, chosen, rejected, max_length):
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    try:
        out = tokenize_pair(row, TOKENIZER, max_length=max_length, max_prompt_length=max_length // 2, row_index=0)
    except DataError as err:
        assert err.row == 0 and err.field in {"prompt", "chosen", "rejected"}
        return
    batch = PreferenceCollator(PAD)([out])
    prompt_ids = out["prompt_input_ids"]
    assert prompt_ids[:1] == [BOS] and prompt_ids[:2] != [BOS, BOS]
    assert (batch["input_ids"][batch["response_mask"]] != BOS).all()
    for i, field in enumerate(("chosen", "rejected")):
        response = out[f"{field}_input_ids"]
        assert len(prompt_ids) + len(response) <= max_length
        assert batch["response_mask"][i].sum() == len(response) > 0
        assert batch["input_ids"][i][batch["response_mask"][i]].tolist() == response
        if not out[f"{field}_truncated"]:
            assert response[-1] == EOS
    if not any(out[f"{name}_truncated"] for name in ("prompt", "chosen")) and "<" not in prompt + chosen:
        # nothing lost: the text comes back from the ids
        assert TOKENIZER.decode(prompt_ids[1:]) == prompt and TOKENIZER.decode(out["chosen_input_ids"][:-1]) == chosen
