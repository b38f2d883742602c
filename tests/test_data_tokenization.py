"""Tokenizing pairs: EOS once, BOS once, the seam, chat templates, truncation, and errors naming row and field.

The byte tokenizer makes every expected id hand-checkable: a byte's id is its value (``ord`` for ASCII),
BOS <s> = 257, EOS </s> = 258, PAD <pad> = 256.
"""

from __future__ import annotations

import logging

import datasets
import pytest
from tokenizers import Tokenizer, models, processors
from transformers import PreTrainedTokenizerFast

from amapo.builtin.tokenizer import build_byte_tokenizer
from amapo.data import DataError, load_preference_dataset, tokenize_dataset, tokenize_pair
from amapo.data.truncation import truncate_pair

BOS, EOS, PAD = 257, 258, 256
# No EOS anywhere in this template: the response must get EOS appended.
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def ids(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def tokenizer():
    return build_byte_tokenizer(chat_template=True)


def tok(row, tokenizer, max_length=64, max_prompt_length=32, **kwargs):
    return tokenize_pair(row, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length, **kwargs)


def merging_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE tokenizer with one merge, "a" + "b" -> "ab", so "xa" + "by" tokenizes differently joined."""
    vocab = {c: i for i, c in enumerate("abxy ")}
    vocab["ab"] = len(vocab)
    for token in ("<pad>", "<s>", "</s>"):
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    backend.add_special_tokens(["<pad>", "<s>", "</s>"])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


# --- plain pairs ---------------------------------------------------------------------------------------------


def test_plain_pair_ids_bos_once_and_eos_appended_once(tokenizer):
    out = tok({"prompt": "Hi", "chosen": " yes", "rejected": " no</s>"}, tokenizer)
    assert out == {
        "prompt_input_ids": [BOS, *ids("Hi")],
        "chosen_input_ids": [*ids(" yes"), EOS],
        "rejected_input_ids": [*ids(" no"), EOS],  # EOS already last: not appended again
        "prompt_truncated": False,
        "chosen_truncated": False,
        "rejected_truncated": False,
    }


def test_pre_rendered_prompt_starting_with_bos_text_gets_one_bos(tokenizer):
    out = tok({"prompt": "<s>Q:", "chosen": " a", "rejected": " b"}, tokenizer)
    assert out["prompt_input_ids"] == [BOS, *ids("Q:")]


def test_bos_text_inside_a_response_is_refused_inside_a_prompt_kept(tokenizer):
    with pytest.raises(DataError, match="BOS") as err:
        tok({"prompt": "Q:", "chosen": " a<s>b", "rejected": " b"}, tokenizer, row_index=4)
    assert (err.value.row, err.value.field) == (4, "chosen")
    # a pre-rendered Llama-2 style multi-turn prompt opens each user turn with BOS
    out = tok({"prompt": "<s>[INST] a [/INST] b </s><s>[INST] c [/INST]", "chosen": " d", "rejected": " e"}, tokenizer)
    assert out["prompt_input_ids"].count(BOS) == 2 and out["prompt_input_ids"][:2] == [BOS, *ids("[")]


def test_seam_fallback_tokenizes_the_response_alone(caplog):
    """ "xa" + "by" joined is x|ab|y: the prompt ids [x, a] are not a prefix, so the response is b|y alone."""
    merging = merging_tokenizer()
    x, a, b, y, bos, eos = 2, 0, 1, 3, 7, 8
    row = {"prompt": "xa", "chosen": "by", "rejected": " y"}
    out = tok(row, merging)
    assert out["prompt_input_ids"] == [bos, x, a]
    assert out["chosen_input_ids"] == [b, y, eos]  # not [ab, y]: that would re-tokenize the prompt's "a"
    assert out["rejected_input_ids"] == [4, y, eos]  # no merge at this seam: the joint tokenization is used
    ds = datasets.Dataset.from_list([row, {"prompt": "x", "chosen": " y", "rejected": "y"}])
    with caplog.at_level(logging.WARNING, logger="amapo.data"):
        tokenize_dataset(ds, merging, max_length=20, max_prompt_length=10)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].getMessage().startswith("1 of 2 rows")


def test_empty_prompt_needs_a_bos(tokenizer):
    assert tok({"prompt": "", "chosen": "a", "rejected": "b"}, tokenizer)["prompt_input_ids"] == [BOS]
    merging = merging_tokenizer()
    merging._tokenizer.post_processor = None  # now no BOS is added
    with pytest.raises(DataError, match="no tokens") as err:
        tok({"prompt": "", "chosen": "a", "rejected": "b"}, merging, row_index=2)
    assert (err.value.row, err.value.field) == (2, "prompt")


# --- conversational pairs ------------------------------------------------------------------------------------


def test_chat_pair_has_one_bos_and_responses_cut_after_eos(tokenizer):
    """The template renders "<s><|user|>\\nHi</s>\\n<|assistant|>\\n" then "yes</s>\\n": the "\\n" after EOS
    is the template's turn separator, not part of the answer, so the response ends at EOS."""
    out = tok({"prompt": [user("Hi")], "chosen": [assistant("yes")], "rejected": [assistant("no")]}, tokenizer)
    assert out["prompt_input_ids"] == [BOS, *ids("<|user|>\nHi"), EOS, *ids("\n<|assistant|>\n")]
    assert out["chosen_input_ids"] == [*ids("yes"), EOS]
    assert out["rejected_input_ids"] == [*ids("no"), EOS]
    assert (out["prompt_input_ids"] + out["chosen_input_ids"]).count(BOS) == 1


def test_template_without_eos_gets_eos_appended_and_overrides_the_tokenizer_template(tokenizer, tmp_path):
    row = {"prompt": [user("Hi")], "chosen": [assistant("yes")], "rejected": [assistant("no")]}
    out = tok(row, tokenizer, chat_template=PLAIN_CHAT_TEMPLATE)
    assert out["prompt_input_ids"] == ids("user: Hi\nassistant: ")  # this template renders no BOS
    assert out["chosen_input_ids"] == [*ids("yes\n"), EOS]
    path = tmp_path / "chat.jinja"
    path.write_text(PLAIN_CHAT_TEMPLATE)
    assert tok(row, tokenizer, chat_template=str(path)) == out


def test_conversational_data_without_any_chat_template_asks_for_one():
    bare = build_byte_tokenizer(chat_template=False)
    row = {"prompt": [user("Hi")], "chosen": [assistant("yes")], "rejected": [assistant("no")]}
    with pytest.raises(ValueError, match="chat_template"):
        tok(row, bare)
    with pytest.raises(ValueError, match="chat_template"):
        tokenize_dataset(datasets.Dataset.from_list([row]), bare, max_length=64, max_prompt_length=32)
    assert tok({"prompt": "Hi", "chosen": "a", "rejected": "b"}, bare)["chosen_input_ids"] == [97, EOS]


def test_template_that_renders_the_prompt_differently_is_refused(tokenizer):
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>>{% endif %}"
    row = {"prompt": [user("Hi")], "chosen": [assistant("yes")], "rejected": [assistant("no")]}
    with pytest.raises(DataError, match="differently inside the full conversation") as err:
        tok(row, tokenizer, chat_template=template, row_index=3)
    assert (err.value.row, err.value.field) == (3, "chosen")


def test_every_orca_row_tokenizes_within_max_length(tokenizer, orca_file):
    tokenized = tokenize_dataset(
        load_preference_dataset(str(orca_file)), tokenizer, max_length=1024, max_prompt_length=512
    )
    assert len(tokenized) == 40
    # the copy holds both kinds of row (tests/data/orca/README.md): cut prompts and responses, and whole pairs
    assert (sum(tokenized["prompt_truncated"]), sum(tokenized["chosen_truncated"])) == (15, 26)
    assert sum(tokenized["rejected_truncated"]) == 35
    assert any(not (row["chosen_truncated"] or row["rejected_truncated"]) for row in tokenized)
    assert tokenized.column_names[:3] == ["prompt_input_ids", "chosen_input_ids", "rejected_input_ids"]
    for row in tokenized:
        prompt = row["prompt_input_ids"]
        assert prompt[0] == BOS and BOS not in prompt[1:]
        for field in ("chosen", "rejected"):
            response = row[f"{field}_input_ids"]
            assert len(response) > 0 and len(prompt) + len(response) <= 1024
            assert row[f"{field}_truncated"] or response[-1] == EOS


# --- truncation ----------------------------------------------------------------------------------------------

# prompt "abcdef" -> [BOS, a..f] (7 tokens), chosen "xyz" -> [x, y, z, EOS] (4), rejected "uv" -> [u, v, EOS] (3)
TRUNCATION_ROW = {"prompt": "abcdef", "chosen": "xyz", "rejected": "uv"}


@pytest.mark.parametrize(("mode", "prompt"), [("keep_end", [BOS, *ids("def")]), ("keep_start", [BOS, *ids("abc")])])
def test_prompt_truncation_modes_keep_bos_and_responses_fit(tokenizer, mode, prompt):
    out = tok(TRUNCATION_ROW, tokenizer, max_length=8, max_prompt_length=4, truncation_mode=mode)
    assert out["prompt_input_ids"] == prompt
    assert out["chosen_input_ids"] == [*ids("xyz"), EOS]
    assert (out["prompt_truncated"], out["chosen_truncated"], out["rejected_truncated"]) == (True, False, False)


def test_responses_keep_their_start_when_the_prompt_cut_is_not_enough(tokenizer):
    out = tok(TRUNCATION_ROW, tokenizer, max_length=6, max_prompt_length=4)
    assert out["prompt_input_ids"] == [BOS, *ids("def")]
    assert out["chosen_input_ids"] == ids("xy")  # EOS cut away: the text did not end here
    assert out["rejected_input_ids"] == [*ids("uv")]
    assert (out["chosen_truncated"], out["rejected_truncated"]) == (True, True)


def test_short_pairs_are_not_truncated(tokenizer):
    out = tok(TRUNCATION_ROW, tokenizer, max_length=11, max_prompt_length=4)
    assert out["prompt_input_ids"] == [BOS, *ids("abcdef")] and not out["prompt_truncated"]


def test_prompt_that_cannot_fit_names_row_field_and_limit(tokenizer):
    with pytest.raises(DataError, match="max_prompt_length=1") as err:
        tok(TRUNCATION_ROW, tokenizer, max_length=6, max_prompt_length=1, row_index=9)
    assert (err.value.row, err.value.field) == (9, "prompt")


def test_a_response_truncated_to_nothing_is_an_error_not_silent():
    """Unreachable through tokenize_pair (max_prompt_length < max_length leaves a response >= 1 token); the
    guard still holds when truncate_pair is called with limits that leave no room."""
    with pytest.raises(DataError) as err:
        truncate_pair([1, 2, 3, 4, 5], [6, 9], [7, 9], max_length=4, max_prompt_length=4, row=17)
    assert str(err.value) == "row 17, field 'chosen': response is empty after truncation to max_length=4"


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"max_length": 8, "max_prompt_length": 8}, "max_length"),
        ({"max_length": 8, "max_prompt_length": 0}, "max_prompt_length"),
        ({"max_length": 8, "max_prompt_length": 4, "truncation_mode": "keep_middle"}, "truncation_mode"),
    ],
)
def test_bad_truncation_options_name_the_option(tokenizer, options, name):
    with pytest.raises(ValueError, match=name):
        tokenize_pair(TRUNCATION_ROW, tokenizer, **options)


def test_tokenize_dataset_keeps_passthrough_columns_and_names_the_bad_row(tokenizer):
    rows = [{"prompt": "Q", "chosen": " a", "rejected": " b", "offset": 0.5}] * 3
    tokenized = tokenize_dataset(datasets.Dataset.from_list(rows), tokenizer, max_length=16, max_prompt_length=8)
    assert "prompt" not in tokenized.column_names and tokenized["offset"] == [0.5] * 3
    rows[2] = {**rows[2], "rejected": " a"}
    with pytest.raises(DataError) as err:
        tokenize_dataset(datasets.Dataset.from_list(rows), tokenizer, max_length=16, max_prompt_length=8)
    assert (err.value.row, err.value.field) == (2, "rejected")


def test_errors_from_worker_processes_keep_the_global_row_index(tokenizer):
    rows = [{"prompt": "Q", "chosen": f" a{i}", "rejected": f" b{i}"} for i in range(6)]
    rows[4]["chosen"] = " x<s>"
    with pytest.raises(DataError) as err:
        tokenize_dataset(datasets.Dataset.from_list(rows), tokenizer, max_length=16, max_prompt_length=8, num_proc=2)
    assert (err.value.row, err.value.field) == (4, "chosen")


def test_keep_end_cut_on_a_turn_bos_keeps_one_bos(tokenizer):
    row = {"prompt": "a<s>bc", "chosen": " x", "rejected": " y"}  # [BOS, a, BOS, b, c]
    out = tok(row, tokenizer, max_length=6, max_prompt_length=4)  # BOS + [BOS, b, c] -> [BOS, b, c]
    assert out["prompt_input_ids"] == [BOS, *ids("bc")]
