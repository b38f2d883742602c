"""Question files of the three benchmarks, read in their published schemas; the benchmark is told from the rows.

* **AlpacaEval** (tatsu-lab/alpaca_eval; the eval set is the Hub dataset tatsu-lab/alpaca_eval, e.g.
  ``alpaca_eval_gpt4_baseline.json``, also shipped in the AMaPO release as eval/alpacaeval2/data/): a JSON list of
  ``{dataset, instruction, output, generator}``, ``output`` being the reference model's answer. A question is its
  ``instruction``; alpaca_eval's ``evaluate_from_model`` (src/alpaca_eval/main.py) matches answers to it by that text.
* **MT-Bench** (lm-sys/FastChat, fastchat/llm_judge/data/mt_bench/question.jsonl): JSON Lines of
  ``{question_id, category, turns: [str, str], reference?}``; two user turns, the second asked after the model's
  first answer. ``category`` picks FastChat's sampling temperature (fastchat/llm_judge/common.py).
* **Arena-Hard v0.1** (lmarena/arena-hard-auto, data/arena-hard-v0.1/question.jsonl before the April 2025 commit
  "reformat v0.1"): ``{question_id, category, cluster, turns: [{content}]}``.
* **Arena-Hard v2.0** (lmarena/arena-hard-auto, data/arena-hard-v2.0/question.jsonl; since April 2025 the v0.1
  file too, as ``{uid, category, cluster, prompt}``): ``{uid, category, subcategory, prompt}``, read by gen_answer.py
  as ``question["uid"]`` and ``question["prompt"]``.

Every problem is one line naming the file, the line and the field (``questions.jsonl:3, field 'turns': ...``),
found before a model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amapo.data.errors import DataError
from amapo.data.reading import read_json_rows, value_kind
from amapo.errors import UserError

BENCHMARKS = ("alpaca-eval", "arena-hard", "mt-bench")


@dataclass(frozen=True)
class Schema:
    """One published question format: the benchmark it belongs to, its rows, where it is defined."""

    name: str  # also the name of the answer format written for it
    benchmark: str
    title: str
    rows: str
    source: str
    key_field: str  # what an answer names its question by


SCHEMAS = {
    schema.name: schema
    for schema in (
        Schema(
            "alpaca-eval", "alpaca-eval", "AlpacaEval", "a JSON list of {instruction, ...}",
            "tatsu-lab/alpaca_eval's eval set", "instruction",
        ),
        Schema(
            "mt-bench", "mt-bench", "MT-Bench", "{question_id, category, turns: [str, ...]}",
            "FastChat fastchat/llm_judge/data/mt_bench/question.jsonl", "question_id",
        ),
        Schema(
            "arena-hard-v0.1", "arena-hard", "Arena-Hard v0.1", "{question_id, category, cluster, turns: [{content}]}",
            "arena-hard-auto data/arena-hard-v0.1/question.jsonl before April 2025", "question_id",
        ),
        Schema(
            "arena-hard-v2.0", "arena-hard", "Arena-Hard v2.0", "{uid, category, prompt, ...}",
            "arena-hard-auto data/arena-hard-v2.0/question.jsonl", "uid",
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Question:
    index: int  # 0-based position in the file: the question samples with seed + index
    line: int  # 1-based line its row starts on
    key: str | int  # question_id, uid or instruction: what its answer is found by
    turns: tuple[str, ...]  # the user's messages, in order
    category: str | None
    row: dict  # as read (AlpacaEval's answer keeps the row's dataset)


@dataclass(frozen=True)
class QuestionSet:
    path: Path
    schema: Schema
    questions: list[Question]


def detect_schema(row: dict) -> str | None:
    """The schema a row looks like, from its fields (None: none of them)."""
    if "instruction" in row:
        return "alpaca-eval"
    if "uid" in row or "prompt" in row:
        return "arena-hard-v2.0"
    turns = row.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict):
        return "arena-hard-v0.1"
    if "turns" in row:
        return "mt-bench"
    if "question_id" in row:  # turns missing: say so in the schema it most looks like
        return "arena-hard-v0.1" if "cluster" in row else "mt-bench"
    return None


def expected_schemas() -> str:
    return "; ".join(f"{s.title} {s.rows} ({s.source})" for s in SCHEMAS.values())


def choose_schema(row: dict, benchmark: str | None, where: str) -> tuple[str, str | None]:
    """(schema to read the file with, the schema its first row looks like) for ``--benchmark`` or detection."""
    detected = detect_schema(row)
    if benchmark is None:
        if detected is None:
            fields = ", ".join(list(row)[:8]) or "none"
            raise UserError(
                f"{where}: rows of an unknown schema (fields: {fields}); expected one of: {expected_schemas()}"
            )
        return detected, detected
    if detected is not None and SCHEMAS[detected].benchmark == benchmark:
        return detected, detected
    if benchmark == "arena-hard":
        return ("arena-hard-v0.1" if "turns" in row or "question_id" in row else "arena-hard-v2.0"), detected
    return benchmark, detected


def read_questions(path: str | Path, benchmark: str | None = None) -> QuestionSet:
    """Every question of ``path`` checked against the schema of ``benchmark`` (None: told from the first row)."""
    path = Path(path).expanduser()
    name = path.name
    schema: Schema | None = None
    looks_like: str | None = None
    questions: list[Question] = []
    first_line: dict[Any, int] = {}
    for index, (line, row) in enumerate(read_json_rows(path)):
        where = f"{name}:{line}"
        if schema is None:
            chosen, looks_like = choose_schema(row, benchmark, where)
            schema = SCHEMAS[chosen]
        try:
            question = parse_row(schema, row, index, line)
        except DataError as err:
            reason = err.reason
            if benchmark is not None and looks_like != schema.name:
                guess = f"; this row looks like {SCHEMAS[looks_like].title}" if looks_like else ""
                reason += (
                    f"; --benchmark {benchmark} expects {schema.title} rows {schema.rows} ({schema.source}){guess}"
                )
            raise DataError(reason, field=err.field, where=where) from None
        if question.key in first_line:
            raise DataError(
                f"{question.key!r} is also the {schema.key_field} on line {first_line[question.key]}; each question "
                "must appear once (its answer is found by it)",
                field=schema.key_field,
                where=where,
            )
        first_line[question.key] = line
        questions.append(question)
    assert schema is not None  # read_json_rows refuses a file without rows
    return QuestionSet(path, schema, questions)


def parse_row(schema: Schema, row: dict, index: int, line: int) -> Question:
    """The question of one row; a DataError (field, reason) for what the schema needs and the row lacks."""
    if schema.name == "alpaca-eval":
        instruction = text_field(row, "instruction")
        return Question(index, line, instruction, (instruction,), None, row)
    if schema.name == "arena-hard-v2.0":
        uid = id_field(row, "uid")
        return Question(index, line, uid, (text_field(row, "prompt"),), optional_text(row, "category"), row)
    key = id_field(row, "question_id")
    category = text_field(row, "category")  # FastChat and arena-hard v0.1 pick the temperature by it
    turns = row.get("turns")
    if schema.name == "mt-bench":
        strings = turn_list(turns, "a list of strings (the user's messages)")
        for i, turn in enumerate(strings):
            if not isinstance(turn, str) or not turn.strip():
                raise DataError(f"turns[{i}] must be a non-empty string, got {describe(turn)}", field="turns")
        return Question(index, line, key, tuple(strings), category, row)
    messages = turn_list(turns, 'a list of {"content": str} objects')
    contents = []
    for i, turn in enumerate(messages):
        content = turn.get("content") if isinstance(turn, dict) else None
        if not isinstance(content, str) or not content.strip():
            got = describe(content) if isinstance(turn, dict) else describe(turn)
            raise DataError(f'turns[{i}] must be {{"content": a non-empty string}}, got {got}', field="turns")
        contents.append(content)
    return Question(index, line, key, tuple(contents), category, row)


def turn_list(turns: Any, shape: str) -> list:
    if turns is None:
        raise DataError(f"missing: it must be {shape}", field="turns")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"must be {shape}, got {describe(turns)}", field="turns")
    return turns


def text_field(row: dict, field: str) -> str:
    value = row.get(field)
    if value is None:
        raise DataError("missing", field=field)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"must be a non-empty string, got {describe(value)}", field=field)
    return value


def optional_text(row: dict, field: str) -> str | None:
    value = row.get(field)
    return value if isinstance(value, str) else None


def id_field(row: dict, field: str) -> str | int:
    value = row.get(field)
    if value is None:
        raise DataError("missing", field=field)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise DataError(f"must be a string or an integer, got {describe(value)}", field=field)
    return value


def describe(value: Any) -> str:
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    kind = value_kind(value)
    return {"list": "an empty list" if value == [] else "a list", "object": "an object", "null": "null"}.get(
        kind, f"a {kind}"
    )
