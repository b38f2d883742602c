"""``amapo generate`` as a researcher meets it: question files in each benchmark's published schema (written here,
nothing downloaded), answered by the built-in tiny model into files whose rows have exactly the fields each judge
reads; MT-Bench's second turn asked after the first answer; a killed run resumed into the file one run writes;
every mistake one line before the model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import amapo.generation.prompts as prompts_module
from amapo.cli import main
from amapo.generation.formats import markdown_counts
from amapo.model import generate as generation_module

# --- question files in the published schemas ----------------------------------------------------------------------

# FastChat fastchat/llm_judge/data/mt_bench/question.jsonl: two user turns; math/reasoning/coding rows carry a
# reference. Categories cover a sampled one (writing: 0.7), a greedy one (reasoning: 0) and one FastChat does not list.
MT_BENCH = [
    {"question_id": 81, "category": "writing", "turns": ["reverse: abc =", "Rewrite it backwards."]},
    {
        "question_id": 101,
        "category": "reasoning",
        "turns": ["reverse: kdaf =", "And again?"],
        "reference": ["fadk", "x"],
    },
    {"question_id": 82, "category": "roleplay", "turns": ["reverse: hello world =", "Shorter."]},
    {"question_id": 83, "category": "writing", "turns": ["hi", "bye"]},
    {"question_id": 150, "category": "stem", "turns": ["reverse: xyz =", "Why?"], "reference": ["zyx", "y"]},
]
# arena-hard-auto data/arena-hard-v0.1/question.jsonl before April 2025
ARENA_V01 = [
    {"question_id": "328c149ed45a41c0b9d6f14659e63599", "category": "arena-hard-v0.1", "cluster": "ABC Sequence",
     "turns": [{"content": "reverse: abc ="}]},
    {"question_id": "b43c07656ead4150b360294ee932b410", "category": "arena-hard-v0.1", "cluster": "ABC Sequence",
     "turns": [{"content": "reverse: kdaf ="}]},
]  # fmt: skip
# arena-hard-auto data/arena-hard-v2.0/question.jsonl
ARENA_V20 = [
    {"uid": "2edbb5f36f5b42be", "category": "hard_prompt", "subcategory": "coding", "prompt": "reverse: abc ="},
    {"uid": "9a1c0e2f7d3b4c55", "category": "creative_writing", "subcategory": "poem", "prompt": "reverse: kdaf ="},
]
# tatsu-lab/alpaca_eval's eval set (alpaca_eval_gpt4_baseline.json): the reference model's output and name
ALPACA = [
    {"dataset": "helpful_base", "instruction": f"reverse: {w} =", "output": w[::-1], "generator": "gpt4_1106_preview"}
    for w in ("abc", "kdaf", "hello", "xyz", "stone")
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, indent=2))  # pretty-printed, as the published file
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_ids(rows: list[dict]) -> list[dict]:
    """Rows without what differs between any two runs: the random answer id and the time stamp."""
    return [{k: v for k, v in row.items() if k not in ("answer_id", "ans_id", "tstamp")} for row in rows]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, builtin_cache) -> Path:
    """A local copy of the built-in tiny model (its tokenizer has a chat template): answers default to inside it."""
    from amapo.builtin import resolve_source

    folder = tmp_path_factory.mktemp("models") / "tiny-chat"
    shutil.copytree(resolve_source("builtin:tiny-llama"), folder)
    return folder


def generate(model: Path, questions: Path, *options: str) -> int:
    return main(["generate", "--model_name_or_path", str(model), "--questions", str(questions),
                 "--max_new_tokens", "6", *options])  # fmt: skip


def error_line(capsys) -> str:
    """The one line a user error prints (no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    assert len(err) == 1 and err[0].startswith("amapo generate: error: "), err
    return err[0].removeprefix("amapo generate: error: ")


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if the model is loaded: what the user must fix is found before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("amapo.model.loading.load_model", refuse)


@pytest.fixture
def prompts_seen(monkeypatch) -> list[list[str]]:
    """The prompt texts of every generate call (the real generation still runs)."""
    seen: list[list[str]] = []

    def spy(model, tokenizer, texts, **kwargs):
        seen.append(list(texts))
        return generation_module.generate_texts(model, tokenizer, texts, **kwargs)

    monkeypatch.setattr(prompts_module, "generate_texts", spy)
    return seen


# --- each benchmark's format, exactly ----------------------------------------------------------------------------


def test_mt_bench_answers_are_fastchats_model_answer_rows(model_dir, tmp_path, capsys, prompts_seen):
    questions = write_jsonl(tmp_path / "question.jsonl", MT_BENCH[:3])
    assert generate(model_dir, questions, "--batch_size", "2") == 0
    output = model_dir / "eval" / "mt-bench" / "tiny-chat.jsonl"  # default: MODEL/eval/BENCHMARK/MODEL_ID.jsonl
    rows = read_jsonl(output)
    assert [r["question_id"] for r in rows] == [81, 101, 82]
    for row in rows:
        assert list(row) == ["question_id", "answer_id", "model_id", "choices", "tstamp"]
        assert row["model_id"] == "tiny-chat" and len(row["answer_id"]) == 22 and isinstance(row["tstamp"], float)
        [choice] = row["choices"]
        assert list(choice) == ["index", "turns"] and choice["index"] == 0
        assert len(choice["turns"]) == 2 and all(isinstance(t, str) for t in choice["turns"])

    # turn 2 was asked after the conversation so far, through the chat template: user 1, answer 1, user 2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    asked = [text for call in prompts_seen for text in call]
    for question, row in zip(MT_BENCH[:3], rows, strict=True):
        first, second = question["turns"]
        conversation = [{"role": "user", "content": first},
                        {"role": "assistant", "content": row["choices"][0]["turns"][0]},
                        {"role": "user", "content": second}]  # fmt: skip
        assert tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) in asked
    assert len(prompts_seen) == 4  # two batches, two turns each

    out = capsys.readouterr().out
    assert f"3 answers written, 3 in {output}" in out
    assert "gen_judgment.py --model-list tiny-chat" in out and "model_answer/tiny-chat.jsonl" in out
    settings = json.loads((output.parent / "tiny-chat.jsonl.settings.json").read_text())
    assert settings["temperature"] is None and settings["temperature_by_category"]["writing"] == 0.7  # FastChat's
    assert settings["max_new_tokens"] == 6 and settings["top_p"] == 1.0 and settings["seed"] == 0
    assert settings["model"] == str(model_dir.resolve()) and len(settings["chat_template_sha256"]) == 64
    assert settings["amapo_version"] and settings["stop_token_ids"] == [258]


@pytest.mark.parametrize(("rows", "fields"), [
    (ARENA_V01, ["question_id", "answer_id", "model_id", "choices", "tstamp", "conv_metadata"]),
    (ARENA_V20, ["uid", "ans_id", "model", "messages", "tstamp", "metadata"]),
])  # fmt: skip
def test_arena_hard_answers_in_the_format_of_each_version(model_dir, tmp_path, rows, fields):
    questions = write_jsonl(tmp_path / "question.jsonl", rows)
    output = tmp_path / "answers" / "my-model.jsonl"
    assert generate(model_dir, questions, "--output", str(output), "--model_id", "my-model") == 0
    answers = read_jsonl(output)
    assert [list(a) for a in answers] == [fields] * len(rows)
    style = ["token_len", "header_count", "list_count", "bold_count"]  # show_result.py reads them in this order
    for question, answer in zip(rows, answers, strict=True):
        if "uid" in question:
            assert answer["uid"] == question["uid"] and answer["model"] == "my-model"
            user, assistant = answer["messages"]
            assert user == {"role": "user", "content": question["prompt"]}
            assert assistant["role"] == "assistant" and list(assistant["content"]) == ["answer"]
            metadata = answer["metadata"]
        else:
            assert answer["question_id"] == question["question_id"] and answer["model_id"] == "my-model"
            [choice] = answer["choices"]
            [turn] = choice["turns"]
            assert choice["index"] == 0 and list(turn) == ["content", "token_len"]
            metadata = answer["conv_metadata"]
            assert metadata["token_len"] == turn["token_len"]
        assert list(metadata) == style and isinstance(metadata["token_len"], int)
        assert list(metadata["header_count"]) == ["h1", "h2", "h3", "h4", "h5", "h6"]
    settings = json.loads(output.with_name("my-model.jsonl.settings.json").read_text())
    assert settings["temperature"] == 0.0 and settings["benchmark"] == "arena-hard"  # arena-hard's greedy default


def test_alpaca_eval_answers_are_the_eval_set_with_our_outputs(model_dir, tmp_path, capsys):
    questions = write_json(tmp_path / "alpaca_eval_gpt4_baseline.json", ALPACA)
    assert generate(model_dir, questions, "--model_id", "tiny-amapo") == 0
    output = model_dir / "eval" / "alpaca-eval" / "model_outputs.json"
    rows = json.loads(output.read_text())
    assert [list(r) for r in rows] == [["dataset", "instruction", "output", "generator"]] * len(ALPACA)
    assert [r["instruction"] for r in rows] == [q["instruction"] for q in ALPACA]
    assert {r["generator"] for r in rows} == {"tiny-amapo"} and {r["dataset"] for r in rows} == {"helpful_base"}
    assert all(r["output"] == r["output"].strip() for r in rows)
    settings = json.loads(output.with_name("model_outputs.json.settings.json").read_text())
    assert (settings["temperature"], settings["top_p"]) == (0.9, 1.0)  # the AMaPO release's Llama-3 configs
    assert f"alpaca_eval --model_outputs {output} --annotators_config weighted_alpaca_eval_gpt4_turbo" in (
        capsys.readouterr().out
    )


def test_markdown_counts_as_arena_hard_counts_them():
    text = "# Title\n## Part\nsome **bold** and __also__\n1. one\n2. two\n- a\n* b\n```\n# not a header\n- no\n```\n"
    assert markdown_counts(text) == {
        "header_count": {"h1": 1, "h2": 1, "h3": 0, "h4": 0, "h5": 0, "h6": 0},
        "list_count": {"ordered": 2, "unordered": 2},  # the code block's lines do not count
        "bold_count": {"**": 1, "__": 1},
    }


# --- resuming: a killed run, rerun, is the file of one run -------------------------------------------------------


@pytest.mark.parametrize("benchmark_name", ["mt-bench", "alpaca-eval"])  # "benchmark" is pytest-benchmark's fixture
def test_a_killed_run_resumed_writes_what_one_run_writes(model_dir, tmp_path, monkeypatch, capsys, benchmark_name):
    if benchmark_name == "mt-bench":
        questions, name, read = write_jsonl(tmp_path / "q.jsonl", MT_BENCH), "a.jsonl", read_jsonl
        calls_per_batch = 2  # one per turn
    else:
        questions, name, read = write_json(tmp_path / "q.json", ALPACA), "a.json", lambda p: json.loads(p.read_text())
        calls_per_batch = 1
    sampling = ["--temperature", "1.0", "--batch_size", "2", "--seed", "7"]  # sampled: each question its own seed
    whole, resumed = tmp_path / "whole" / name, tmp_path / "resumed" / name
    assert generate(model_dir, questions, "--output", str(whole), *sampling) == 0

    calls = []

    def killed_after_one_batch(*args, **kwargs):
        if len(calls) == calls_per_batch:
            raise RuntimeError("killed")
        calls.append(1)
        return generation_module.generate_texts(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(prompts_module, "generate_texts", killed_after_one_batch)
        with pytest.raises(RuntimeError, match="killed"):  # not a user error: it keeps its traceback
            generate(model_dir, questions, "--output", str(resumed), *sampling)
    assert len(read(resumed)) == 2  # the first batch, whole; the second lost
    capsys.readouterr()
    assert generate(model_dir, questions, "--output", str(resumed), *sampling) == 0
    assert f"{len(ALPACA) if benchmark_name == 'alpaca-eval' else len(MT_BENCH)} questions, 2 already answered" in (
        capsys.readouterr().out
    )
    assert without_ids(read(resumed)) == without_ids(read(whole))

    # the same with a trial run of the first questions, then the rest
    trial = tmp_path / "trial" / name
    assert generate(model_dir, questions, "--output", str(trial), *sampling, "--max_questions", "3") == 0
    assert generate(model_dir, questions, "--output", str(trial), *sampling) == 0
    assert without_ids(read(trial)) == without_ids(read(whole))


def test_an_unfinished_last_line_is_dropped_and_answered_again(model_dir, tmp_path, capsys):
    questions = write_jsonl(tmp_path / "q.jsonl", ARENA_V20)
    output = tmp_path / "a.jsonl"
    assert generate(model_dir, questions, "--output", str(output)) == 0
    whole = read_jsonl(output)
    text = output.read_text()
    output.write_text(text[: len(text) - 20])  # a write cut short inside the last line
    assert generate(model_dir, questions, "--output", str(output)) == 0
    assert "is unfinished (a run stopped while writing it): it is dropped" in capsys.readouterr().out
    assert without_ids(read_jsonl(output)) == without_ids(whole)


def test_a_complete_file_is_not_answered_again(model_dir, tmp_path, capsys, monkeypatch):
    questions = write_jsonl(tmp_path / "q.jsonl", ARENA_V01)
    output = tmp_path / "a.jsonl"
    assert generate(model_dir, questions, "--output", str(output)) == 0
    before = output.read_text()
    monkeypatch.setattr("amapo.model.loading.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert generate(model_dir, questions, "--output", str(output)) == 0
    assert "0 answers written, 2 in" in capsys.readouterr().out and output.read_text() == before


def test_other_settings_never_continue_a_file(model_dir, tmp_path, capsys, no_model_loading):
    questions = write_json(tmp_path / "q.json", ALPACA)
    output = tmp_path / "model_outputs.json"
    output.write_text(json.dumps([{"instruction": ALPACA[0]["instruction"], "output": "x", "generator": "m"}]))
    assert generate(model_dir, questions, "--output", str(output)) == 2  # answers, but no record of how
    assert error_line(capsys) == (
        f"{output} holds 1 answers but no model_outputs.json.settings.json saying how they were made: give another "
        f"--output, or delete {output} to start over"
    )
    settings = {"benchmark": "alpaca-eval", "format": "alpaca-eval", "model": str(model_dir.resolve()),
                "model_id": "tiny-chat", "temperature": 0.9, "top_p": 1.0, "max_new_tokens": 6, "seed": 0}  # fmt: skip
    from transformers import AutoTokenizer

    from amapo.generation.settings import template_hash

    settings["chat_template_sha256"] = template_hash(AutoTokenizer.from_pretrained(model_dir).chat_template)
    sidecar = output.with_name("model_outputs.json.settings.json")
    sidecar.write_text(json.dumps(settings))  # answers drawn before issue 28 (no sampler recorded)
    assert generate(model_dir, questions, "--output", str(output), "--max_new_tokens", "6") == 2
    assert error_line(capsys) == (
        f"{output} holds 1 answers made with other settings (model_outputs.json.settings.json): how tokens are drawn "
        "(amapo.seeds.SAMPLER): counter-v1 now, one torch generator per question (before issue 28) for them. To "
        f"continue it, rerun with the recorded settings; or give another --output, or delete {output} to start over"
    )
    sidecar.write_text(json.dumps({**settings, "sampler": "counter-v1"}))
    assert generate(model_dir, questions, "--output", str(output), "--temperature", "0.5", "--seed", "3") == 2
    assert error_line(capsys) == (
        f"{output} holds 1 answers made with other settings (model_outputs.json.settings.json): --temperature: 0.5 "
        "now, 0.9 for them; --seed: 3 now, 0 for them. To continue it, rerun with the recorded settings; or give "
        f"another --output, or delete {output} to start over"
    )


# --- every mistake: one line naming file, line and field, before the model loads ---------------------------------


def bad_files(tmp_path: Path) -> dict[str, Path]:
    return {
        "no_turns": write_jsonl(tmp_path / "no_turns.jsonl", [MT_BENCH[0], {"question_id": 2, "category": "math"}]),
        "turn_number": write_jsonl(tmp_path / "turn_number.jsonl", [MT_BENCH[0], {**MT_BENCH[1], "turns": ["a", 3]}]),
        "turns_text": write_jsonl(tmp_path / "turns_text.jsonl", [{**MT_BENCH[0], "turns": "hello"}]),
        "no_prompt": write_jsonl(tmp_path / "no_prompt.jsonl", [ARENA_V20[0], {"uid": "x", "category": "c"}]),
        "empty_content": write_jsonl(tmp_path / "empty_content.jsonl", [ARENA_V01[0], {**ARENA_V01[1], "turns": [{}]}]),
        "no_instruction": write_json(tmp_path / "no_instruction.json", [ALPACA[0], {"dataset": "a", "output": "y"}]),
        "unknown": write_jsonl(tmp_path / "unknown.jsonl", [{"text": "hi", "label": 1}]),
        "twice": write_jsonl(tmp_path / "twice.jsonl", [MT_BENCH[0], MT_BENCH[1], MT_BENCH[0]]),
        "mt_bench": write_jsonl(tmp_path / "mt_bench.jsonl", MT_BENCH[:1]),
    }  # fmt: skip


@pytest.mark.parametrize(("name", "options", "expected"), [
    ("missing", [], "--questions: no such file {path} (looked in {path})"),
    ("no_turns", [], "no_turns.jsonl:2, field 'turns': missing: it must be a list of strings (the user's messages)"),
    ("turn_number", [], "turn_number.jsonl:2, field 'turns': turns[1] must be a non-empty string, got a number"),
    ("turns_text", [], "turns_text.jsonl:1, field 'turns': must be a list of strings (the user's messages), got a "
                       "string"),
    ("no_prompt", [], "no_prompt.jsonl:2, field 'prompt': missing"),
    ("empty_content", [], "empty_content.jsonl:2, field 'turns': turns[0] must be {\"content\": a non-empty string}, "
                          "got null"),
    ("no_instruction", [], "no_instruction.json:8, field 'instruction': missing"),
    ("unknown", [], "unknown.jsonl:1: rows of an unknown schema (fields: text, label); expected one of: AlpacaEval "
                    "a JSON list of {instruction, ...} (tatsu-lab/alpaca_eval's eval set); MT-Bench {question_id, "
                    "category, turns: [str, ...]} (FastChat fastchat/llm_judge/data/mt_bench/question.jsonl); "
                    "Arena-Hard v0.1 {question_id, category, cluster, turns: [{content}]}"),
    ("twice", [], "twice.jsonl:3, field 'question_id': 81 is also the question_id on line 1; each question must "
                  "appear once"),
    ("mt_bench", ["--benchmark", "alpaca-eval"], "mt_bench.jsonl:1, field 'instruction': missing; --benchmark "
                  "alpaca-eval expects AlpacaEval rows a JSON list of {instruction, ...} (tatsu-lab/alpaca_eval's "
                  "eval set); this row looks like MT-Bench"),
    ("mt_bench", ["--benchmark", "arena-hard"], "mt_bench.jsonl:1, field 'turns': turns[0] must be {\"content\": a "
                  "non-empty string}, got a string; --benchmark arena-hard expects Arena-Hard v0.1 rows"),
    ("mt_bench", ["--benchmark", "mtbench"], "--benchmark must be one of alpaca-eval, arena-hard, mt-bench, got "
                  "'mtbench'"),
    ("mt_bench", ["--max_new_tokens", "0"], "--max_new_tokens must be >= 1, got 0"),
    ("mt_bench", ["--batch_size", "-2"], "--batch_size must be >= 1, got -2"),
    ("mt_bench", ["--temperature", "-0.1"], "--temperature must be >= 0, got -0.1"),
    ("mt_bench", ["--top_p", "0"], "--top_p must be in (0, 1], got 0.0"),
    ("mt_bench", ["--top_p", "1.5"], "--top_p must be in (0, 1], got 1.5"),
    ("mt_bench", ["--chat_template", "nowhere.jinja"], "--chat_template 'nowhere.jinja' is neither Jinja text"),
    ("mt_bench", ["--model_id", "a/b"], "--model_id must be a name without / or \\"),
])  # fmt: skip
def test_bad_input_is_one_line_before_the_model_loads(
    model_dir, tmp_path, capsys, no_model_loading, name, options, expected
):
    path = bad_files(tmp_path).get(name, tmp_path / f"{name}.jsonl")
    output = tmp_path / "out" / "answers.jsonl"
    assert generate(model_dir, path, "--output", str(output), *options) == 2
    assert error_line(capsys).startswith(expected.replace("{path}", str(path)))
    assert not output.parent.exists()


def test_a_model_without_a_chat_template_is_told_to_pass_one(model_dir, tmp_path, capsys, monkeypatch):
    bare = tmp_path / "base-model"
    shutil.copytree(model_dir, bare, ignore=shutil.ignore_patterns("eval", "chat_template.jinja"))
    questions = write_jsonl(tmp_path / "q.jsonl", MT_BENCH[:1])
    with monkeypatch.context() as patch:
        patch.setattr("amapo.model.loading.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
        assert generate(bare, questions) == 2
    assert error_line(capsys) == (
        f"the tokenizer of {bare} has no chat template (a base model?): pass --chat_template with Jinja text or a "
        ".jinja file, e.g. the template the model was fine-tuned with"
    )
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] "
    output = tmp_path / "a.jsonl"
    assert generate(bare, questions, "--chat_template", template, "--output", str(output)) == 0
    assert len(read_jsonl(output)) == 1


def test_prompts_that_may_outrun_the_models_positions_are_noted(model_dir, tmp_path, capsys, monkeypatch):
    questions = write_jsonl(tmp_path / "q.jsonl", ARENA_V20)

    def stop(*args, **kwargs):
        raise RuntimeError("stop before loading")

    monkeypatch.setattr("amapo.model.loading.load_model", stop)
    with pytest.raises(RuntimeError, match="stop before loading"):
        main(["generate", "--model_name_or_path", str(model_dir), "--questions", str(questions),
              "--output", str(tmp_path / "a.jsonl"), "--max_new_tokens", "500"])  # fmt: skip
    assert (
        "amapo generate: note: 2 prompt(s) plus --max_new_tokens 500 can exceed the model's 512 positions (longest: "
        "41 tokens, q.jsonl:2); answers past that point may degrade"
    ) in capsys.readouterr().out


def test_generate_is_a_command():
    import amapo.cli

    assert "generate" in amapo.cli.COMMANDS
    assert "amapo generate --model_name_or_path M --questions FILE" in amapo.cli.__doc__


# --- the batched sampler -----------------------------------------------------------------------------------------


def test_stop_tokens_are_the_models_and_the_tokenizers():
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[128001, 128009]))
    assert generation_module.stop_token_ids(model, SimpleNamespace(eos_token_id=128009)) == [128001, 128009]
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=2))
    assert generation_module.stop_token_ids(model, SimpleNamespace(eos_token_id=7)) == [2, 7]


def test_a_prompts_sample_does_not_depend_on_its_batch(model_dir):
    from amapo.model.loading import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(str(model_dir)), load_model(str(model_dir)).eval()
    texts = ["reverse: abc =", "reverse: a much longer prompt here =", "hi"]

    def sample(rows: list[int], top_p: float) -> list[str]:
        return generation_module.generate_texts(
            model, tokenizer, [texts[i] for i in rows], templated=False, max_new_tokens=12, top_p=top_p,
            seeds=[100 + i for i in rows], temperatures=[1.0] * len(rows),
        )  # fmt: skip

    for top_p in (1.0, 0.8):
        together = sample([0, 1, 2], top_p)
        assert together == [sample([i], top_p)[0] for i in range(3)]
        assert sample([2, 0], top_p) == [together[2], together[0]]
    assert len(set(sample([0, 0, 0], 1.0))) == 1  # same prompt, same seed: the same answer
