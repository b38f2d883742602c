"""Local JSON/JSONL files are read by amapo itself: every problem names the file and line; slicing matches
``datasets``; roles and formats are checked; a file's rows can be checked without torch; truncation is reported."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import pytest

from amapo.builtin.tokenizer import build_byte_tokenizer
from amapo.data import DataError, load_preference_dataset, standardize_preference_dataset
from amapo.data.loading import load_raw_dataset
from amapo.data.precheck import check_local_dataset
from amapo.data.tokenization import TruncationCounts, tokenize_dataset, truncation_counts, truncation_report
from amapo.errors import UserError

PLAIN = {"prompt": "p", "chosen": "good answer", "rejected": "bad answer"}
CHAT = {
    "prompt": [{"role": "user", "content": "p"}],
    "chosen": [{"role": "assistant", "content": "good"}],
    "rejected": [{"role": "assistant", "content": "bad"}],
}


def write(tmp_path: Path, content: str | bytes, name: str = "pairs.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.mark.parametrize(
    "content,message",
    [
        (jsonl(PLAIN) + '{"prompt": "p",\n', r"^pairs\.jsonl:2: not valid JSON \(Expecting"),
        # the error at the end of a row names that row's column, not "column 1" of the line after it
        ('{"prompt": "a", "chosen": "b"\n', r"^pairs\.jsonl:1: not valid JSON \(Expecting ',' delimiter at column 30"),
        ("", r"^pairs\.jsonl: the file is empty \(no rows\)"),
        ("\n  \n", r"^pairs\.jsonl: the file is empty"),
        (jsonl(PLAIN).encode() + b'{"prompt": "\xff"}\n', r"^pairs\.jsonl:2: not UTF-8 \(byte 0xff at column 13\)"),
        (jsonl(PLAIN) + "[1, 2]\n", r"^pairs\.jsonl:2: a row must be a JSON object, got a list"),
        (
            jsonl(PLAIN, PLAIN, {**PLAIN, "chosen": ["x"]}),
            r"^pairs\.jsonl:3, row 2, field 'chosen': got a list where row 0 \(line 1\) has text",
        ),
    ],
    ids=["malformed line", "unclosed row", "empty", "blank lines only", "bad UTF-8", "not an object", "type clash"],
)
def test_unreadable_files_name_file_and_line(tmp_path, content, message):
    with pytest.raises(UserError, match=message):
        load_preference_dataset(write(tmp_path, content))


def test_a_type_clash_names_row_and_field(tmp_path):
    with pytest.raises(DataError) as err:
        load_raw_dataset(write(tmp_path, jsonl(PLAIN, {**PLAIN, "chosen": 3})))
    assert (err.value.row, err.value.field) == (1, "chosen")


def test_a_json_list_file_names_the_line_of_a_bad_row(tmp_path):
    path = write(tmp_path, "[\n" + json.dumps(PLAIN) + ",\n" + json.dumps(PLAIN) + ",\n  7\n]", "pairs.json")
    with pytest.raises(UserError, match=r"pairs\.json:4: a row must be a JSON object, got a number"):
        load_raw_dataset(path)
    good = write(tmp_path, json.dumps([PLAIN, PLAIN], indent=2), "good.json")
    assert len(load_raw_dataset(good)) == 2


@pytest.mark.parametrize("split", ["train", "train[:90%]", "train[90%:]", "train[2:5]", "train[:3]+train[-2:]",
                                   "train[33%:66%]"])  # fmt: skip
def test_split_slicing_selects_what_datasets_selects(tmp_path, split):
    path = write(tmp_path, jsonl(*({**PLAIN, "i": i} for i in range(10))))
    expected = datasets.load_dataset("json", data_files=path, split=split)["i"]
    assert list(load_raw_dataset(path, split=split)["i"]) == list(expected)


def test_an_unknown_split_of_a_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"pairs\.jsonl: cannot take split 'test' .* split 'train'"):
        load_raw_dataset(write(tmp_path, jsonl(PLAIN)), split="test")


def test_an_edited_file_is_read_again(tmp_path):
    path = write(tmp_path, jsonl(PLAIN))
    assert len(load_raw_dataset(path)) == 1
    Path(path).write_text(jsonl(PLAIN, PLAIN, PLAIN))
    assert len(load_raw_dataset(path)) == 3  # not the cached one-row table


def test_a_value_of_another_kind_at_any_depth_names_its_path(tmp_path):
    multimodal = {**CHAT, "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "good"}]}]}
    with pytest.raises(DataError) as err:
        load_raw_dataset(write(tmp_path, jsonl(CHAT, CHAT, multimodal)))
    assert str(err.value) == (
        "pairs.jsonl:3, row 2, field 'chosen': got a list in 'chosen[].content' where row 0 (line 1) has text; "
        "a dataset must use one format for every row"
    )


def test_rows_are_typed_from_every_row_not_the_first_batch(tmp_path):
    # datasets fixes the types from its first 1000 rows: a later decimal, new key or list item failed, unnamed
    rows = [{**PLAIN, "score": 1, "tags": []}] * 1200 + [{**PLAIN, "score": 2.5, "tags": ["x"], "note": "n"}]
    raw = load_raw_dataset(write(tmp_path, jsonl(*rows)))
    assert len(raw) == 1201
    assert (raw[0]["score"], raw[0]["tags"], raw[0]["note"]) == (1.0, [], None)
    assert (raw[-1]["score"], raw[-1]["tags"], raw[-1]["note"]) == (2.5, ["x"], "n")


@pytest.mark.parametrize(
    "content,message",
    [
        ('[\n  {"prompt": "p"},\n  {"prompt": "p",}\n]', r"^pairs\.json:3: not valid JSON \(Expecting property name"),
        (b'[\n {"prompt": "p"},\n {"prompt": "\xff"}\n]', r"^pairs\.json:3: not UTF-8 \(byte 0xff at column 14\)"),
        ("[]", r"^pairs\.json: the file has no rows \(an empty list\)$"),
        (
            '{\n  "version": 1,\n  "data": []\n}',
            r"^pairs\.json: the top level is an object with keys version, data, not rows: write the rows as a JSON",
        ),
    ],
    ids=["malformed", "bad UTF-8", "empty list", "one object"],
)
def test_a_json_document_names_its_lines(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        load_raw_dataset(write(tmp_path, content, "pairs.json"))


def test_json_files_in_the_shapes_datasets_read(tmp_path):
    columns = {"prompt": ["p", "q"], "chosen": ["a 1", "b 1"], "rejected": ["a 2", "b 2"]}
    assert load_raw_dataset(write(tmp_path, json.dumps(columns, indent=2), "columns.json"))["chosen"] == ["a 1", "b 1"]
    assert len(load_raw_dataset(write(tmp_path, jsonl(PLAIN, PLAIN), "lines.json"))) == 2  # JSON Lines in .json
    with_bom = b"\xef\xbb\xbf" + jsonl(PLAIN).encode()
    assert load_raw_dataset(write(tmp_path, with_bom, "bom.jsonl"))["prompt"] == ["p"]


@pytest.mark.parametrize("suffix,compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)])
def test_compressed_files_read_and_name_their_lines(tmp_path, suffix, compress):
    path = tmp_path / f"pairs.jsonl{suffix}"
    path.write_bytes(compress(jsonl(PLAIN, PLAIN).encode()))
    assert len(load_preference_dataset(str(path))) == 2
    assert check_local_dataset(str(path)) == 2
    path.write_bytes(compress((jsonl(PLAIN) + "{oops\n").encode()))
    with pytest.raises(DataError, match=rf"^pairs\.jsonl{suffix}:2: not valid JSON"):
        load_preference_dataset(str(path))


def mixed_dataset() -> datasets.Dataset:
    """Row 0 plain, row 1 conversational: storable only as JSON-typed columns (datasets' on_mixed_types)."""
    rows = [PLAIN, {**CHAT, "prompt": "p"}, PLAIN]  # (a string prompt beside messages is a conversational row)
    return datasets.Dataset.from_list(rows, on_mixed_types="use_json")


def test_mixed_formats_are_refused_in_any_dataset():
    with pytest.raises(DataError) as err:
        standardize_preference_dataset(mixed_dataset())
    assert str(err.value) == (
        "row 1, field 'chosen': a list of messages, but row 0 is plain text; a dataset must use one format "
        "(plain strings or lists of messages) for every row"
    )
    dropped = Counter()
    pairs = standardize_preference_dataset(mixed_dataset(), drop_invalid=True, dropped=dropped)
    assert pairs["chosen"] == ["good answer", "good answer"]
    assert dropped == Counter({"chosen: a list of messages, but row 0 is plain text; a dataset must use one format": 1})


def test_a_file_mixing_plain_and_conversational_rows_is_refused_at_the_first_that_differs(tmp_path):
    path = write(tmp_path, jsonl(PLAIN, PLAIN, CHAT))
    message = r"^pairs\.jsonl:3, row 2, field 'prompt': got a list where row 0 \(line 1\) has text; a dataset must"
    with pytest.raises(DataError, match=message):
        load_preference_dataset(path)
    with pytest.raises(DataError, match=message):
        check_local_dataset(path)


def test_unknown_roles_are_refused_and_can_be_mapped(tmp_path):
    row = {**CHAT, "prompt": [{"role": "human", "content": "p"}]}
    path = write(tmp_path, jsonl(CHAT, row))
    with pytest.raises(DataError, match=r"message 0 has role 'human'.*--role_mapping") as err:
        load_preference_dataset(path)
    assert (err.value.row, err.value.field) == (1, "prompt")
    pairs = load_preference_dataset(path, role_mapping={"human": "user"})
    assert pairs[1]["prompt"] == [{"role": "user", "content": "p"}]


def test_a_role_mapping_to_an_unknown_role_is_refused_before_any_row(tmp_path):
    path = write(tmp_path, jsonl({**CHAT, "prompt": [{"role": "human", "content": "p"}]}))
    message = r"^role_mapping maps 'human' to 'person', which is not a role chat templates know; map to one of system"
    for check in (load_preference_dataset, check_local_dataset):
        with pytest.raises(UserError, match=message) as err:
            check(path, role_mapping={"human": "person"})
        assert not isinstance(err.value, DataError)  # an option, not a row


def test_the_precheck_stops_at_the_first_bad_row_with_file_line_row_and_field(tmp_path):
    rows = [PLAIN, PLAIN, {**PLAIN, "rejected": ""}, {**PLAIN, "chosen": ""}]
    with pytest.raises(DataError, match=r"^pairs\.jsonl:3, row 2, field 'rejected': response is empty$"):
        check_local_dataset(write(tmp_path, jsonl(*rows)))
    assert check_local_dataset(write(tmp_path, jsonl(*rows)), drop_invalid=True) == 4  # bad rows dropped later
    assert check_local_dataset(write(tmp_path, jsonl(PLAIN, PLAIN))) == 2


def test_the_precheck_finds_what_the_conversion_finds(tmp_path, orca_file):
    # row 0 has no prompt while later rows have one: in the table that is a null prompt, not an implicit one
    path = write(tmp_path, jsonl({"chosen": "a b", "rejected": "a c"}, PLAIN))
    with pytest.raises(DataError) as converted:
        load_preference_dataset(path)
    with pytest.raises(DataError) as checked:
        check_local_dataset(path)
    assert (converted.value.row, converted.value.field, converted.value.reason) == (0, "prompt", "missing (no value)")
    assert str(checked.value) == "pairs.jsonl:1, row 0, field 'prompt': missing (no value)"
    assert check_local_dataset(str(orca_file)) == 40  # OpenAI's preference schema, nested paths


def test_the_precheck_applies_column_and_role_mappings(tmp_path):
    row = {"q": "p", "good": "yes", "bad": "no"}
    assert check_local_dataset(write(tmp_path, jsonl(row)), column_mapping={"prompt": "q", "chosen": "good",
                                                                            "rejected": "bad"}) == 1  # fmt: skip
    chat = write(tmp_path, jsonl({**CHAT, "prompt": [{"role": "human", "content": "p"}]}))
    with pytest.raises(DataError, match="'human'"):
        check_local_dataset(chat)
    assert check_local_dataset(chat, role_mapping={"human": "user"}) == 1


def test_the_precheck_leaves_other_sources_to_the_loader(tmp_path):
    parquet = tmp_path / "pairs.parquet"
    datasets.Dataset.from_list([PLAIN]).to_parquet(str(parquet))
    assert check_local_dataset(str(parquet)) is None
    assert check_local_dataset("org/some-hub-dataset") is None
    assert check_local_dataset("builtin:reverse") is None
    assert check_local_dataset(str(tmp_path)) is None  # a folder


def test_the_precheck_imports_neither_torch_nor_datasets():
    code = (
        "import sys, amapo.data.precheck\nprint([m for m in ('torch', 'datasets', 'transformers') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_truncation_is_reported_in_one_line_with_counts(capsys):
    tokenizer = build_byte_tokenizer()
    long = "x" * 40
    pairs = datasets.Dataset.from_list(
        [{**PLAIN, "chosen": long}, PLAIN, {**PLAIN, "rejected": "y" * 40, "chosen": long}]
    )
    tokenized = tokenize_dataset(pairs, tokenizer, max_length=24, max_prompt_length=8, name="mine.jsonl@train")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        "amapo: mine.jsonl@train: 2 of 3 pairs (67%) cut to --max_length 24 (2 chosen, 1 rejected responses "
        "shortened); raise --max_length to keep whole responses"
    )
    assert truncation_counts(tokenized) == TruncationCounts(total=3, pairs=2, chosen=2, rejected=1, prompts=0)
    assert truncation_report(tokenized, "mine.jsonl@train", 24, 8) == line
    tokenize_dataset(pairs, tokenizer, max_length=64, max_prompt_length=8)
    assert "cut to" not in capsys.readouterr().err


def test_cut_prompts_are_reported_in_the_same_line(capsys):
    tokenizer = build_byte_tokenizer()
    long_prompt = {**PLAIN, "prompt": "q" * 30}
    pairs = datasets.Dataset.from_list([long_prompt, {**long_prompt, "chosen": "x" * 40}, PLAIN])
    tokenized = tokenize_dataset(pairs, tokenizer, max_length=24, max_prompt_length=8, name="p.jsonl")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("amapo: p.jsonl: 1 of 3 pairs (33%) cut to --max_length 24 (1 chosen, 0 rejected")
    assert "; 2 prompts cut to --max_prompt_length 8)" in line
    assert truncation_counts(tokenized).prompts == 2
    tokenize_dataset(pairs.select([0]), tokenizer, max_length=24, max_prompt_length=8, name="p.jsonl")
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "amapo: p.jsonl: 1 of 1 prompts cut to --max_prompt_length 8 (no response shortened); raise "
        "--max_prompt_length and --max_length to keep whole prompts"
    )
