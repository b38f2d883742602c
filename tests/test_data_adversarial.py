"""Malformed and adversarial rows load correctly or fail with a DataError naming what is wrong, never with a
traceback from deep inside a library."""

from __future__ import annotations

import pyarrow
import pytest
from datasets import Dataset
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from amapo.builtin.tokenizer import build_byte_tokenizer
from amapo.data import DataError, standardize_preference_dataset, tokenize_dataset

TOKENIZER = build_byte_tokenizer()

text = st.text(max_size=300) | st.text(alphabet="\u0301\u200f\u202e\x00🙂é", max_size=50) | st.just("x" * 5000)
junk = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.lists(st.integers(), max_size=3)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]) | st.integers() | st.none(), "content": text | junk}
) | st.dictionaries(st.sampled_from(["role", "content", "name"]), text, max_size=2)
# Nested dict keys are plain names: keys that differ only by invisible characters (e.g. "\u200f" and
# "\u200f\x00") make pyarrow itself fail to read the row back, before any amapo code runs.
value = (
    text | junk | st.lists(message, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), text, max_size=2)
)
rows = st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "extra"]), value, min_size=0, max_size=4)


def as_dataset(row: dict) -> Dataset:
    try:
        return Dataset.from_list([row])
    except (pyarrow.ArrowException, TypeError, ValueError, OverflowError):
        assume(False)  # arrow cannot type this row at all: it never reaches amapo's code


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(row=rows)
def test_adversarial_rows_load_or_fail_with_a_data_error(row):
    dataset = as_dataset(row)
    try:
        standard = standardize_preference_dataset(dataset)
    except DataError as err:
        assert err.field is not None or "column" in err.reason or "rows" in err.reason, str(err)
        return
    assert {"prompt", "chosen", "rejected"} <= set(standard.column_names)
    try:
        tokenized = tokenize_dataset(standard, TOKENIZER, max_length=256, max_prompt_length=128)
    except DataError as err:
        assert err.row == 0 or err.row is None, str(err)
        return
    response = tokenized[0]["chosen_input_ids"]
    assert 0 < len(tokenized[0]["prompt_input_ids"]) + len(response) <= 256 and len(response) > 0


@pytest.mark.parametrize(
    "row, field",
    [
        ({"prompt": "p", "chosen": 3, "rejected": "r"}, "chosen"),
        ({"prompt": "p", "chosen": [{"content": "c"}], "rejected": [{"role": "assistant", "content": "r"}]}, "chosen"),
        ({"prompt": "p", "chosen": "c"}, "rejected"),
        ({"prompt": "p", "chosen": [{"role": "assistant", "content": 5}], "rejected": "r"}, "chosen"),
    ],
)
def test_mistyped_fields_are_named(row, field):
    with pytest.raises(DataError) as err:
        standardize_preference_dataset(as_dataset(row))
    assert err.value.field == field
