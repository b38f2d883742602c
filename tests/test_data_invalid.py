"""Invalid rows: an error naming row, field and reason by default; dropped and counted per reason on request."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from datasets import Dataset

from amapo.builtin.tokenizer import build_byte_tokenizer
from amapo.data import DataError, standardize_preference_dataset, tokenize_dataset

ROWS = [
    {"prompt": "a", "chosen": "good", "rejected": "bad"},
    {"prompt": "b", "chosen": "same", "rejected": "same"},  # chosen identical to rejected
    {"prompt": "c", "chosen": "", "rejected": "bad"},  # empty response
    {"prompt": "d", "chosen": "fine", "rejected": "worse"},
    {"prompt": "e", "chosen": "twin", "rejected": "twin"},
]


def test_strict_path_names_the_first_bad_row():
    with pytest.raises(DataError, match=r"row 1, field 'rejected': identical to chosen"):
        standardize_preference_dataset(Dataset.from_list(ROWS))


def test_drop_keeps_valid_rows_unchanged_and_counts_each_reason():
    dropped = Counter()
    kept = standardize_preference_dataset(Dataset.from_list(ROWS), drop_invalid=True, dropped=dropped)
    strict = standardize_preference_dataset(Dataset.from_list([ROWS[0], ROWS[3]]))
    assert [r["prompt"] for r in kept] == ["a", "d"]
    assert [{k: r[k] for k in strict.column_names} for r in kept] == list(strict)
    assert kept["row_index"] == [0, 3]  # the source rows, for later messages
    assert dropped == Counter({"rejected: identical to chosen": 2, "chosen: response is empty": 1})


def test_dropping_every_row_is_an_error():
    with pytest.raises(ValueError, match=r"every one of the 2 rows is invalid.*identical to chosen"):
        standardize_preference_dataset(Dataset.from_list([ROWS[1], ROWS[4]]), drop_invalid=True)


def test_rows_that_fail_tokenization_are_dropped_and_counted():
    tokenizer = build_byte_tokenizer()
    rows = [{"prompt": "p", "chosen": "ok", "rejected": "no"}, {"prompt": "q", "chosen": "x<s>y", "rejected": "n"}]
    pairs = standardize_preference_dataset(Dataset.from_list(rows))
    with pytest.raises(DataError, match="row 1"):
        tokenize_dataset(pairs, tokenizer, max_length=32, max_prompt_length=16)
    dropped = Counter()
    tokenized = tokenize_dataset(pairs, tokenizer, max_length=32, max_prompt_length=16, drop_invalid=True,
                                 dropped=dropped)  # fmt: skip
    assert len(tokenized) == 1 and tokenized["row_index"] == [0]
    assert dropped == Counter({"chosen: holds the BOS token": 1})


def test_amapo_train_drops_and_reports(tmp_path, capsys):
    from amapo.builtin import resolve_source
    from amapo.train.parsing import parse_train_args
    from amapo.train.run import run_training

    rows = [json.loads(line) for line in Path(resolve_source("builtin:reverse")).read_text().splitlines()[:10]]
    rows[2]["rejected"] = rows[2]["chosen"]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--config", "builtin", "--dataset", str(data), "--max_steps", "1", "--eval_datasets", "none"]
    with pytest.raises(DataError, match="row 2"):
        run_training(parse_train_args([*args, "--output_dir", str(tmp_path / "strict")]))
    run_training(parse_train_args([*args, "--output_dir", str(tmp_path / "drop"), "--drop_invalid_rows", "true"]))
    assert "dropped 1 invalid rows: 1 x rejected: identical to chosen" in capsys.readouterr().out
