"""One answer row per question, in the format each benchmark's own answer generator writes and its judge reads.

* ``alpaca-eval``: the eval set's row with our ``output`` and ``generator`` (= model id), keeping ``dataset``:
  the columns alpaca_eval's ``evaluate_from_model`` keeps (tatsu-lab/alpaca_eval, src/alpaca_eval/main.py,
  ``columns_to_keep``); ``alpaca_eval --model_outputs`` reads ``instruction`` and ``output``, and ``generator`` for
  the model's name. The file is one JSON list.
* ``mt-bench``: ``{question_id, answer_id, model_id, choices: [{index: 0, turns: [answer1, answer2]}], tstamp}``,
  as FastChat's fastchat/llm_judge/gen_model_answer.py writes (one JSON object per line); its gen_judgment.py reads
  ``choices[0]["turns"]``.
* ``arena-hard-v0.1``: ``{question_id, answer_id, model_id, choices: [{index: 0, turns: [{content, token_len}]}],
  tstamp, conv_metadata}``: the turns as arena-hard-auto's first gen_answer.py wrote them (March 2024), and the
  ``conv_metadata`` (token length and markdown counts) its September 2024 version added for single-turn answers,
  which its show_result.py --style-control reads; its gen_judgment.py reads ``choices[0]["turns"][i]["content"]``.
* ``arena-hard-v2.0``: ``{uid, ans_id, model, messages: [{role: user, content: prompt}, {role: assistant, content:
  {answer}}], tstamp, metadata: {token_len, header_count, list_count, bold_count}}``, as arena-hard-auto's current
  gen_answer.py writes; gen_judgment.py reads ``messages[-1]["content"]["answer"]`` and show_result.py the
  ``metadata`` (in that key order) for style control.

``token_len`` is counted with the model's own tokenizer; arena-hard counts with tiktoken (gpt-3.5-turbo's encoding
for v0.1, gpt-4o's for v2.0). Its utils/add_markdown_info.py recomputes the metadata with tiktoken for a folder of
answer files, when lengths comparable with the baseline's matter (style control).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from amapo.alpaca_eval_outputs import alpaca_eval_row
from amapo.generation.questions import Question

# shortuuid's default alphabet: FastChat and arena-hard name each answer with a shortuuid.uuid() (22 characters);
# no judge reads the id, it only has to look like one.
ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# Markdown elements as arena-hard-auto counts them (utils/add_markdown_info.py, count_markdown_elements), after
# the contents of ``` code blocks are removed.
CODE_BLOCK = re.compile(r"```[^`]*```")
HEADERS = {f"h{n}": re.compile(rf"^#{{{n}}}\s", re.MULTILINE) for n in range(1, 7)}
LISTS = {"ordered": re.compile(r"^\s*\d+\.\s", re.MULTILINE), "unordered": re.compile(r"^\s*[-*+]\s", re.MULTILINE)}
BOLD = {"**": re.compile(r"\*\*[^*\n]+\*\*"), "__": re.compile(r"__[^_\n]+__")}


def new_answer_id() -> str:
    """22 characters of shortuuid's alphabet from a random UUID (57**22 > 2**128, so no bits are lost)."""
    value, chars = uuid.uuid4().int, []
    for _ in range(22):
        value, digit = divmod(value, len(ID_ALPHABET))
        chars.append(ID_ALPHABET[digit])
    return "".join(chars)


def markdown_counts(text: str) -> dict[str, dict[str, int]]:
    """{header_count: {h1..h6}, list_count: {ordered, unordered}, bold_count: {**, __}} of ``text``."""
    text = CODE_BLOCK.sub("``````", text)
    return {
        "header_count": {name: len(p.findall(text)) for name, p in HEADERS.items()},
        "list_count": {name: len(p.findall(text)) for name, p in LISTS.items()},
        "bold_count": {name: len(p.findall(text)) for name, p in BOLD.items()},
    }


def style_metadata(answer: str, count_tokens: Callable[[str], int]) -> dict:
    return {"token_len": count_tokens(answer), **markdown_counts(answer)}


def answer_row(
    schema: str, question: Question, answers: list[str], model_id: str, count_tokens: Callable[[str], int]
) -> dict:
    """The answer row of ``question`` (``answers``: one per turn) in the format of ``schema``."""
    if schema == "alpaca-eval":
        return alpaca_eval_row(question.key, answers[0], model_id, question.row.get("dataset"))
    if schema == "mt-bench":
        return {
            "question_id": question.key,
            "answer_id": new_answer_id(),
            "model_id": model_id,
            "choices": [{"index": 0, "turns": list(answers)}],
            "tstamp": time.time(),
        }
    if schema == "arena-hard-v0.1":
        row = {
            "question_id": question.key,
            "answer_id": new_answer_id(),
            "model_id": model_id,
            "choices": [{"index": 0, "turns": [{"content": a, "token_len": count_tokens(a)} for a in answers]}],
            "tstamp": time.time(),
        }
        if len(answers) == 1:
            row["conv_metadata"] = style_metadata(answers[0], count_tokens)
        return row
    if schema == "arena-hard-v2.0":
        return {
            "uid": question.key,
            "ans_id": new_answer_id(),
            "model": model_id,
            "messages": [
                {"role": "user", "content": question.turns[0]},
                {"role": "assistant", "content": {"answer": answers[0]}},
            ],
            "tstamp": time.time(),
            "metadata": style_metadata(answers[0], count_tokens),
        }
    raise ValueError(f"unknown answer format {schema!r}")
