"""Loading preference data: each format to the standard form, local files and splits, and errors that name
the row and the field."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import datasets
import pytest

from amapo.data import DataError, load_preference_dataset, standardize_preference_dataset
from amapo.errors import UserError


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def system(text):
    return {"role": "system", "content": text}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def plain_rows(n: int) -> list[dict]:
    return [{"prompt": f"Q{i}:", "chosen": f" good {i}", "rejected": f" bad {i}", "offset": float(i)} for i in range(n)]


# --- formats -------------------------------------------------------------------------------------------------


def test_plain_rows_pass_through_with_extra_columns(tmp_path):
    ds = load_preference_dataset(str(write_jsonl(tmp_path / "p.jsonl", plain_rows(3))))
    assert ds.column_names == ["prompt", "chosen", "rejected", "offset"]
    assert ds[2] == {"prompt": "Q2:", "chosen": " good 2", "rejected": " bad 2", "offset": 2.0}


def test_conversational_rows_keep_role_and_content_only(tmp_path):
    rows = [
        {
            "prompt": [system("Be brief."), user("Hi")],
            "chosen": [{"role": "assistant", "content": "Hello", "name": "bot"}],
            "rejected": [assistant("Go away")],
        }
    ]
    ds = load_preference_dataset(str(write_jsonl(tmp_path / "c.jsonl", rows)))
    assert ds[0]["prompt"] == [system("Be brief."), user("Hi")]
    assert ds[0]["chosen"] == [assistant("Hello")]
    assert ds[0]["rejected"] == [assistant("Go away")]


def test_implicit_prompt_strings_cut_at_a_word_boundary():
    """HH-RLHF shape: the shared prefix, cut back before the differing word; the space goes to the response."""
    ds = datasets.Dataset.from_list(
        [
            {"chosen": "\n\nHuman: Is it?\n\nAssistant: Yes.", "rejected": "\n\nHuman: Is it?\n\nAssistant: Yes!"},
            {"chosen": "Q: sky?\nA: blue", "rejected": "Q: sky?\nA: green and blue"},
        ]
    )
    out = standardize_preference_dataset(ds)
    assert out[0] == {"prompt": "\n\nHuman: Is it?\n\nAssistant:", "chosen": " Yes.", "rejected": " Yes!"}
    assert out[1] == {"prompt": "Q: sky?\nA:", "chosen": " blue", "rejected": " green and blue"}


def test_implicit_prompt_messages_are_everything_before_the_first_difference():
    shared = [system("S"), user("Hi"), assistant("Hello"), user("Joke?")]
    ds = datasets.Dataset.from_list(
        [{"chosen": [*shared, assistant("Knock knock.")], "rejected": [*shared, assistant("No.")], "id": 7}]
    )
    out = standardize_preference_dataset(ds)
    assert out[0] == {"prompt": shared, "chosen": [assistant("Knock knock.")], "rejected": [assistant("No.")], "id": 7}


def test_string_prompt_beside_full_conversations_is_read_from_the_conversations():
    """HuggingFaceH4/ultrafeedback_binarized: ``prompt`` repeats the user turn that chosen/rejected hold."""
    ds = datasets.Dataset.from_list(
        [
            {
                "prompt": "Hi",
                "chosen": [user("Hi"), assistant("Hello!")],
                "rejected": [user("Hi"), assistant("What?")],
                "score_chosen": 8.0,
            }
        ]
    )
    out = standardize_preference_dataset(ds)
    assert out[0] == {
        "prompt": [user("Hi")],
        "chosen": [assistant("Hello!")],
        "rejected": [assistant("What?")],
        "score_chosen": 8.0,
    }


def test_conversational_prompt_with_string_or_repeated_responses():
    prompt = [user("Hi")]
    ds = datasets.Dataset.from_list(
        [{"prompt": prompt, "chosen": [user("Hi"), assistant("Hello")], "rejected": [assistant("Bye")]}]
    )
    assert standardize_preference_dataset(ds)[0]["chosen"] == [assistant("Hello")]
    ds = datasets.Dataset.from_list([{"prompt": prompt, "chosen": "Hello", "rejected": "Bye"}])
    assert standardize_preference_dataset(ds)[0]["rejected"] == [assistant("Bye")]


def test_openai_preference_schema_is_detected(tmp_path):
    rows = [
        {
            "input": {"messages": [system("S"), user(f"q{i}")], "tools": []},
            "preferred_output": [assistant(f"good {i}")],
            "non_preferred_output": [assistant(f"bad {i}")],
            "id": i,
        }
        for i in range(2)
    ]
    ds = load_preference_dataset(str(write_jsonl(tmp_path / "openai.jsonl", rows)))
    assert sorted(ds.column_names) == ["chosen", "id", "prompt", "rejected"]
    assert ds[1] == {
        "prompt": [system("S"), user("q1")],
        "chosen": [assistant("good 1")],
        "rejected": [assistant("bad 1")],
        "id": 1,
    }


def test_orca_file_loads_every_row_in_openai_schema(orca_file):
    ds = load_preference_dataset(str(orca_file))
    assert len(ds) == len(orca_file.read_text().splitlines()) == 40  # every row of the copy (tests/data/orca)
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    assert all(row["prompt"][-1]["role"] == "user" for row in ds)
    assert all(len(row["chosen"]) == 1 and row["chosen"][0]["role"] == "assistant" for row in ds)


def test_column_mapping_with_dotted_paths_and_an_extra_column():
    ds = datasets.Dataset.from_list(
        [{"q": {"text": "Why?"}, "answers": {"good": "Because.", "bad": "No."}, "score_diff": 1.5, "meta": "m"}]
    )
    mapping = {"prompt": "q.text", "chosen": "answers.good", "rejected": "answers.bad", "offset": "score_diff"}
    out = standardize_preference_dataset(ds, mapping)
    assert sorted(out.column_names) == ["chosen", "meta", "offset", "prompt", "rejected"]
    assert out[0] == {"prompt": "Why?", "chosen": "Because.", "rejected": "No.", "offset": 1.5, "meta": "m"}


def test_column_mapping_to_an_unknown_column_names_it():
    ds = datasets.Dataset.from_list(plain_rows(1))
    with pytest.raises(DataError, match="'response_j'") as err:
        standardize_preference_dataset(ds, {"chosen": "response_j"})
    assert err.value.field == "chosen"


# --- local files and splits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "parquet"])
def test_local_file_types(tmp_path, suffix):
    source = datasets.Dataset.from_list(plain_rows(4))
    path = tmp_path / f"pairs.{suffix}"
    if suffix == "csv":
        source.to_csv(str(path), index=False)
    elif suffix == "parquet":
        source.to_parquet(str(path))
    else:
        source.to_json(str(path), lines=suffix == "jsonl")
    ds = load_preference_dataset(str(path))
    assert ds["chosen"] == [f" good {i}" for i in range(4)]
    assert ds["offset"] == [0.0, 1.0, 2.0, 3.0]


def test_split_slicing_partitions_one_file(tmp_path):
    path = str(write_jsonl(tmp_path / "p.jsonl", plain_rows(8)))
    train = load_preference_dataset(path, split="train[:75%]")
    evaluation = load_preference_dataset(path, split="train[75%:]")
    assert train["prompt"] == [f"Q{i}:" for i in range(6)]
    assert evaluation["prompt"] == ["Q6:", "Q7:"]


def test_folder_with_split_files(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", plain_rows(3))
    write_jsonl(tmp_path / "test.jsonl", plain_rows(1))
    assert len(load_preference_dataset(str(tmp_path))) == 3
    assert len(load_preference_dataset(str(tmp_path), split="test")) == 1


@pytest.mark.parametrize("source", ["./missing.jsonl", "data/missing.parquet", "/nowhere/pairs"])
def test_missing_local_path_is_a_user_error_not_a_hub_lookup(source):
    with pytest.raises(UserError, match="not found") as err:
        load_preference_dataset(source)
    assert source in str(err.value)


# --- bad rows ------------------------------------------------------------------------------------------------


def bad_row_error(tmp_path, bad: dict, index: int = 1) -> DataError:
    rows = plain_rows(3)
    rows[index] = {**rows[index], **bad}
    with pytest.raises(DataError) as err:
        load_preference_dataset(str(write_jsonl(tmp_path / "bad.jsonl", rows)))
    return err.value


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"chosen": 3}, "chosen", "got a number where row 0 (line 1) has text"),
        ({"rejected": None}, "rejected", "missing"),
        ({"chosen": ""}, "chosen", "response is empty"),
        ({"rejected": " good 1"}, "rejected", "identical to chosen"),
        ({"prompt": {"text": "Q"}}, "prompt", "got an object where row 0 (line 1) has text"),
    ],
)
def test_mistyped_or_empty_fields_name_row_and_field(tmp_path, bad, field, reason):
    err = bad_row_error(tmp_path, bad)
    assert (err.row, err.field) == (1, field)
    assert reason in err.reason
    # a value of another kind than the same field's in row 0 is refused while reading, naming the line too
    where = "bad.jsonl:2, " if "row 0 (line 1)" in reason else ""
    assert str(err).startswith(f"{where}row 1, field {field!r}: ")


@pytest.mark.parametrize(
    ("message", "reason"),
    [({"role": "assistant"}, "message 0 has no 'content'"), ({"content": "x"}, "message 0 has no 'role'")],
)
def test_malformed_messages_name_row_and_field(message, reason):
    rows = [
        {"prompt": [user("Hi")], "chosen": [assistant("a")], "rejected": [assistant("b")]},
        {"prompt": [user("Hi")], "chosen": [assistant("a")], "rejected": [message]},
    ]
    with pytest.raises(DataError, match=reason) as err:
        standardize_preference_dataset(datasets.Dataset.from_list(rows))
    assert (err.value.row, err.value.field) == (1, "rejected")


def test_response_that_starts_with_a_user_turn_is_refused():
    ds = datasets.Dataset.from_list([{"prompt": [user("Hi")], "chosen": [user("Other")], "rejected": [assistant("b")]}])
    with pytest.raises(DataError, match="must start with an assistant message") as err:
        standardize_preference_dataset(ds)
    assert (err.value.row, err.value.field) == (0, "chosen")


def test_no_chosen_column_asks_for_a_column_mapping():
    ds = datasets.Dataset.from_list([{"question": "q", "response_j": "a", "response_k": "b"}])
    with pytest.raises(DataError, match="column_mapping"):
        standardize_preference_dataset(ds)


def test_data_error_survives_pickling_with_row_and_field():
    """Dataset.map(num_proc=...) sends worker errors through pickle."""
    err = pickle.loads(pickle.dumps(DataError("response is empty", 17, "chosen")))
    assert (err.row, err.field, err.reason) == (17, "chosen", "response is empty")
    assert str(err) == "row 17, field 'chosen': response is empty"


def test_a_name_that_is_not_a_path_goes_to_the_hub_with_config_and_split(monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):  # no network in tests: record the call, return a tiny dataset
        calls.append((args, kwargs))
        return datasets.Dataset.from_list(plain_rows(2))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_preference_dataset("org/pairs", split="train[:10%]", dataset_config="default")
    assert calls == [(("org/pairs", "default"), {"split": "train[:10%]"})]
    assert ds.column_names[:3] == ["prompt", "chosen", "rejected"]


def test_dataset_config_with_a_local_file_is_refused(tmp_path):
    path = str(write_jsonl(tmp_path / "p.jsonl", plain_rows(2)))
    with pytest.raises(ValueError, match="dataset_config"):
        load_preference_dataset(path, dataset_config="default")
