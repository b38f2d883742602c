"""Nothing trains on nonsense (issue 33): a pair whose responses truncation leaves as the same tokens is refused
(or dropped and counted), in train and eval; a compressed file is checked by its first bytes and a corrupt stream is
one line naming the file; a CSV saved with another separator and a JSON file that wraps its rows in an object get
messages that name the real fix. Each found before any model loads."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections import Counter
from pathlib import Path

import pytest
from datasets import Dataset

import amapo.evaluation.run
import amapo.train.run
from amapo.builtin.tokenizer import build_byte_tokenizer
from amapo.cli import main
from amapo.data import DataError, standardize_preference_dataset, tokenize_dataset
from amapo.data.loading import load_raw_dataset
from amapo.data.precheck import check_local_dataset
from amapo.data.tokenization import check_responses_differ, tokenize_pair

MODEL = "builtin:tiny-llama"
SHARED = "The answer to this question is long, and after all of that it is "  # 66 bytes: past 17 byte tokens
# --max_length 20 with a 3-token prompt (BOS + "Q0") keeps the first 17 tokens of each response: SHARED's start
CUT = ["--max_length", "20", "--max_prompt_length", "19"]


def pair(i: int, shared: str = SHARED) -> dict:
    return {"prompt": f"Q{i}", "chosen": shared + "yes", "rejected": shared + "no"}


def distinct(i: int) -> dict:
    return {"prompt": f"Q{i}", "chosen": "yes, that is right", "rejected": "no, it is not so"}


def write(tmp_path: Path, content: str | bytes, name: str = "pairs.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model loads: what the user must fix is found before."""

    def refuse(*_, **__):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(amapo.train.run, "load_model", refuse)
    monkeypatch.setattr(amapo.evaluation.run, "load_models", refuse)


def train(tmp_path: Path, dataset: str, *args: str) -> int:
    out = tmp_path / "out"
    argv = ["train", "--model_name_or_path", MODEL, "--dataset", dataset, "--output_dir", str(out)]
    return main([*argv, "--eval_datasets", "none", "--max_steps", "1", *args])


def error_line(capsys, command: str = "train") -> str:
    """The one line a user error prints (no traceback), without its prefix."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("amapo")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"amapo {command}: error: "), lines
    return lines[0].removeprefix(f"amapo {command}: error: ")


# --- 1. pairs that truncation leaves identical --------------------------------------------------------------------


def test_pairs_truncated_to_the_same_tokens_stop_train_naming_row_limits_and_fix(tmp_path, capsys, no_model):
    data = write(tmp_path, jsonl(distinct(0), pair(1), pair(2)))
    assert train(tmp_path, data, *CUT) == 2
    line = error_line(capsys)
    assert line.startswith("row 1, field 'rejected': identical to chosen after truncation (--max_length 20 keeps the "
                           "first 17 of up to 69 tokens of each response, after a 3-token prompt"), line  # fmt: skip
    assert "raise --max_length" in line and "--drop_invalid_rows true" in line
    assert not (tmp_path / "out").exists()


def test_the_same_pairs_pass_when_max_length_keeps_them_apart(tmp_path):
    tokenizer = build_byte_tokenizer()
    pairs = standardize_preference_dataset(Dataset.from_list([pair(1)]))
    tokenized = tokenize_dataset(pairs, tokenizer, max_length=128, max_prompt_length=19)
    assert tokenized[0]["chosen_input_ids"] != tokenized[0]["rejected_input_ids"]


def test_drop_invalid_rows_drops_them_counts_them_and_trains_on_the_rest(tmp_path, capsys):
    data = write(tmp_path, jsonl(pair(0), distinct(1), pair(2), distinct(3)))
    assert train(tmp_path, data, *CUT, "--drop_invalid_rows", "true") == 0
    out = capsys.readouterr().out
    assert "dropped 2 invalid rows: 2 x rejected: identical to chosen after truncation" in out
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_every_row_truncated_to_the_same_tokens_with_drop_on_is_one_line(tmp_path, capsys, no_model):
    data = write(tmp_path, jsonl(pair(0), pair(1)))
    assert train(tmp_path, data, *CUT, "--drop_invalid_rows", "true") == 2
    line = error_line(capsys)
    assert line.startswith("every one of the 2 rows is invalid (tokenization): 2 x rejected: identical to chosen "
                           "after truncation; nothing is left to use; raise --max_length"), line  # fmt: skip


def test_every_identical_row_with_drop_on_is_one_line_too(tmp_path, capsys, no_model):
    data = write(tmp_path, jsonl({"prompt": "p", "chosen": "a", "rejected": "a"}))
    assert train(tmp_path, data, "--drop_invalid_rows", "true") == 2
    line = error_line(capsys)
    assert line.startswith("every one of the 1 rows is invalid (format): 1 x rejected: identical to chosen;"), line
    assert "raise --max_length" not in line  # not a truncation: no such advice


def test_the_handbook_rendering_refuses_them_as_well():
    tokenizer = build_byte_tokenizer()
    with pytest.raises(DataError, match=r"row 4, field 'rejected': identical to chosen after truncation \(--max_length"
                                        r" 20 keeps the first 1 of up to 99 tokens .* cut to 19 tokens by "
                                        r"--max_prompt_length 19"):  # fmt: skip
        tokenize_pair(pair(1, shared="Q" * 30 + SHARED) | {"prompt": "Q" * 40}, tokenizer, max_length=20,
                      max_prompt_length=19, rendering="handbook", row_index=4)  # fmt: skip


def test_responses_the_tokenizer_makes_identical_are_refused_without_truncation():
    ids = {"prompt_input_ids": [1, 5], "chosen_input_ids": [7, 2], "rejected_input_ids": [7, 2]}
    out = {**ids, "prompt_truncated": False, "chosen_truncated": False, "rejected_truncated": False}
    with pytest.raises(DataError, match=r"^row 3, field 'rejected': tokenizes to the same tokens as chosen"):
        check_responses_differ(out, ids, 3, 20, 10)
    check_responses_differ({**out, "rejected_input_ids": [8, 2]}, ids, 3, 20, 10)  # different: nothing raised


def test_eval_refuses_them_before_the_model_loads(tmp_path, capsys, no_model):
    data = write(tmp_path, jsonl(distinct(0), pair(1)))
    argv = ["eval", "--model_name_or_path", MODEL, "--method", "simpo", "--datasets", f"held={data}", *CUT]
    assert main([*argv, "--output_dir", str(tmp_path / "eval")]) == 2
    line = error_line(capsys, "eval")
    assert line.startswith(f"--datasets held={data}@train: row 1, field 'rejected': identical to chosen after "
                           "truncation (--max_length 20 keeps the first 17"), line  # fmt: skip
    assert not (tmp_path / "eval").exists()


def test_compare_refuses_them_before_the_base_model_loads(tmp_path, capsys, monkeypatch):
    import yaml

    import amapo.compare.run
    from amapo.recipes import recipe_path

    def refuse(*_, **__):
        raise AssertionError("the base model was loaded before the error")

    monkeypatch.setattr(amapo.compare.run, "load_model", refuse)
    data = write(tmp_path, jsonl(distinct(0), pair(1, shared=SHARED * 2)))  # past the recipe's 64 tokens
    recipe = yaml.safe_load(recipe_path("builtin").read_text()) | {"dataset": data}  # its held-out sets are fine
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    argv = ["compare", "--recipe", str(tmp_path / "recipe.yaml"), "--output_dir", str(tmp_path / "report")]
    assert main(argv) == 2
    line = error_line(capsys, "compare")
    assert "row 1, field 'rejected': identical to chosen after truncation (--max_length 64 keeps the first" in line


# --- 2. compressed files ------------------------------------------------------------------------------------------

COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}
NAMES = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_a_plain_file_with_a_compression_suffix_is_named_by_its_first_bytes(tmp_path, capsys, no_model, suffix):
    data = write(tmp_path, jsonl(distinct(0)), f"pairs.jsonl{suffix}")
    assert train(tmp_path, data) == 2
    assert error_line(capsys) == (f"--dataset: {data} is not {NAMES[suffix]}-compressed: it begins like plain JSON: "
                                  f"drop the {suffix} suffix (name it pairs.jsonl)")  # fmt: skip


def test_another_compression_under_a_suffix_is_named_too(tmp_path, capsys, no_model):
    data = write(tmp_path, lzma.compress(jsonl(distinct(0)).encode()), "pairs.jsonl.bz2")
    assert train(tmp_path, data) == 2
    expected = "is not bz2-compressed: it begins like xz-compressed data: name it pairs.jsonl.xz"
    assert error_line(capsys).endswith(expected)


def test_binary_junk_under_a_suffix_shows_its_first_bytes(tmp_path, capsys, no_model):
    data = write(tmp_path, b"\x00\x01\x02\x03junk", "pairs.jsonl.gz")
    assert train(tmp_path, data) == 2
    assert error_line(capsys).endswith("begins with the bytes 00 01 02 03 6a 75 6e 6b, which no compression amapo "
                                       "reads begins with")  # fmt: skip


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_a_cut_stream_is_one_line_naming_the_file_before_the_model_loads(tmp_path, capsys, no_model, suffix):
    whole = COMPRESSORS[suffix](jsonl(*[distinct(i) for i in range(2000)]).encode())
    data = write(tmp_path, whole[: len(whole) // 2], f"pairs.jsonl{suffix}")
    assert train(tmp_path, data) == 2
    line = error_line(capsys)
    assert line.startswith(f"pairs.jsonl{suffix}: cannot be decompressed "), line
    assert line.endswith("the file is cut short or corrupt; copy or compress it again"), line


def test_a_cut_stream_names_the_last_line_read(tmp_path):
    whole = gzip.compress(jsonl(*[distinct(i) for i in range(3000)]).encode())
    data = write(tmp_path, whole[: len(whole) // 2], "pairs.jsonl.gz")
    with pytest.raises(DataError, match=r"^pairs\.jsonl\.gz: cannot be decompressed after line \d+ \(Compressed file "
                                        r"ended before the end-of-stream marker was reached\)"):  # fmt: skip
        check_local_dataset(data)


def test_a_corrupt_stream_read_by_datasets_is_one_line_too(tmp_path):
    whole = gzip.compress(("prompt,chosen,rejected\n" + "".join(f"p{i},a,b\n" for i in range(5000))).encode())
    data = write(tmp_path, whole[: len(whole) // 2], "pairs.csv.gz")  # the header reads: datasets meets the cut
    with pytest.raises(DataError, match=r"^pairs\.csv\.gz: cannot be decompressed \(Compressed file ended before"):
        load_raw_dataset(data)
    data = write(tmp_path, whole[:20] + b"\x00" * 50 + whole[70:], "bad.csv.gz")  # the header does not: checked first
    with pytest.raises(DataError, match=r"^bad\.csv\.gz: cannot be decompressed before its first row \(Error -3 "):
        load_raw_dataset(data)


def test_zst_without_a_zstd_module_says_what_to_install(tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.delitem(__import__("fsspec.compression").compression.compr, "zstd", raising=False)
    data = write(tmp_path, b"\x28\xb5\x2f\xfd" + b"\x00" * 16, "pairs.jsonl.zst")
    assert train(tmp_path, data) == 2
    assert error_line(capsys).endswith("is zstd-compressed, and reading it needs the zstandard package: pip install "
                                       "zstandard (or decompress it: zstd -d)")  # fmt: skip


def test_a_good_compressed_file_still_trains(tmp_path):
    data = write(tmp_path, gzip.compress(jsonl(*[distinct(i) for i in range(4)]).encode()), "pairs.jsonl.gz")
    assert train(tmp_path, data) == 0
    assert (tmp_path / "out" / "model.safetensors").exists()


# --- 3. messages that point at the real fix ------------------------------------------------------------------------


@pytest.mark.parametrize(("separator", "name"), [(";", "';'"), ("\t", "tabs")])
def test_a_csv_saved_with_another_separator_names_it(tmp_path, capsys, no_model, separator, name):
    header = separator.join(["prompt", "chosen", "rejected"])
    data = write(tmp_path, f"{header}\np{separator}a{separator}b\n", "pairs.csv")
    assert train(tmp_path, data) == 2
    line = error_line(capsys)
    assert line == (f"--dataset: pairs.csv: its header read with commas is one column ({header!r}): it looks "
                    f"separated by {name}: save it with commas, or convert it to JSONL")  # fmt: skip
    assert "column_mapping" not in line


def test_a_comma_csv_is_not_taken_for_another_separator(tmp_path):
    data = write(tmp_path, 'prompt,chosen,rejected\n"p; q",a,b\n', "pairs.csv")
    assert load_raw_dataset(data)["prompt"] == ["p; q"]


WRAPPED = {"data": [distinct(i) for i in range(120)], "meta": {"version": 1}}


@pytest.mark.parametrize("indent", [None, 2], ids=["one line", "pretty-printed"])
def test_a_json_object_wrapping_the_rows_names_the_key_that_holds_them(tmp_path, capsys, no_model, indent):
    data = write(tmp_path, json.dumps(WRAPPED, indent=indent), "pairs.json")
    assert train(tmp_path, data) == 2
    assert error_line(capsys) == ("pairs.json: the top level is an object with keys data, meta; its 'data' holds the "
                                  "rows (a list of 120 objects): save that list as the file (or as JSONL)")  # fmt: skip


def test_the_wrapper_message_holds_where_datasets_converts_the_rows(tmp_path):
    data = write(tmp_path, json.dumps(WRAPPED), "pairs.json")  # eval's path: no pre-check, a table of one row
    with pytest.raises(DataError, match=r"^the top level is an object with keys data, meta; its 'data' holds the rows"):
        standardize_preference_dataset(load_raw_dataset(data))
    only = write(tmp_path, json.dumps({"data": WRAPPED["data"]}, indent=2), "only.json")  # one key: not a column
    with pytest.raises(DataError, match=r"^only\.json: the top level is an object with keys data; its 'data' holds"):
        load_raw_dataset(only)


def test_columns_and_a_missing_column_keep_their_messages(tmp_path):
    columns = {"prompt": ["p", "q"], "chosen": ["a", "b"], "rejected": ["c", "d"], "meta": [{"k": 1}, {"k": 2}]}
    assert len(load_raw_dataset(write(tmp_path, json.dumps(columns, indent=2), "columns.json"))) == 2
    with pytest.raises(DataError, match=r"no 'chosen' column .*column_mapping"):
        check_local_dataset(write(tmp_path, jsonl({"prompt": "p", "good": "a", "rejected": "b"})))


def test_degenerate_reasons_count_under_one_key():
    tokenizer = build_byte_tokenizer()
    pairs = standardize_preference_dataset(Dataset.from_list([pair(0), distinct(1), pair(2, shared=SHARED * 2)]))
    dropped = Counter()
    tokenized = tokenize_dataset(pairs, tokenizer, max_length=20, max_prompt_length=19, drop_invalid=True,
                                 dropped=dropped)  # fmt: skip
    assert tokenized["row_index"] == [1]
    assert dropped == Counter({"rejected: identical to chosen after truncation": 2})
