"""The prompts ``amapo make-pairs`` answers: read from any source ``amapo train`` reads, kept in the form training
will render them.

Where the prompts come from, by the source's columns:

* ``chosen`` and ``rejected`` (a preference set, any training format): the prompt of each pair as ``amapo train``
  converts it (``amapo.data.formats``): messages for conversational pairs (HuggingFaceH4/ultrafeedback_binarized's
  string prompt beside conversational answers included), a string for plain pairs;
* ``prompt``: a string or a list of messages;
* ``messages`` (a chat / SFT set): the conversation before its last assistant message.

A prompt keeps its form, so answers are generated exactly as training will later render the pairs: a list of
messages goes through the policy's chat template, a string is plain text. ``prompt_format="chat"`` turns string
prompts into one user message (what SimPO's on_policy_data_gen/decode.py does for every prompt). Duplicates are
dropped (first kept, counted), then ``max_prompts`` keeps the first N.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from amapo.builtin import resolve_source
from amapo.data.errors import DataError
from amapo.errors import UserError

PROMPT_FORMATS = ("auto", "chat", "plain")


@dataclass
class PromptSet:
    prompts: list[Any]  # strings, or lists of {role, content} messages
    duplicates: int = 0
    source_rows: int = 0
    columns: list[str] = field(default_factory=list)

    @property
    def conversational(self) -> bool:
        return bool(self.prompts) and isinstance(self.prompts[0], list)


def read_prompts(
    source: str, split: str = "train", *, dataset_config: str | None = None, prompt_format: str = "auto",
    max_prompts: int | None = None,
) -> PromptSet:  # fmt: skip
    """The deduplicated prompts of ``source`` (module docstring); a problem names the source, row and field."""
    from amapo.data.formats import standardize_preference_dataset
    from amapo.data.loading import load_raw_dataset

    try:
        raw = load_raw_dataset(resolve_source(source), split=split, dataset_config=dataset_config)
        columns = list(raw.column_names)
        if {"chosen", "rejected"} <= set(columns):
            prompts = [check_prompt(p, i) for i, p in enumerate(standardize_preference_dataset(raw)["prompt"])]
        elif "prompt" in columns:
            prompts = [check_prompt(p, i) for i, p in enumerate(raw["prompt"])]
        elif "messages" in columns:
            prompts = [prompt_of_conversation(m, i) for i, m in enumerate(raw["messages"])]
        else:
            raise UserError(
                f"no prompts: its columns are {', '.join(columns) or 'none'}; make-pairs reads a `prompt` column (a "
                "string or messages), preference pairs (`chosen` / `rejected`), or conversations (`messages`)"
            )
    except (ValueError, FileNotFoundError) as err:  # DataError / UserError, and datasets' own errors
        raise UserError(f"--prompts {source}@{split}: {' '.join(str(err).split())}") from None
    if not prompts:
        raise UserError(f"--prompts {source}@{split}: no prompts in it (an empty file or split)")
    if prompt_format == "chat":
        prompts = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    first: dict[str, Any] = {}
    for prompt in prompts:  # a dict keeps insertion order: the first of each duplicate stays, in place
        first.setdefault(json.dumps(prompt, sort_keys=True), prompt)
    unique = list(first.values())
    kept = unique[:max_prompts] if max_prompts else unique
    return PromptSet(kept, duplicates=len(prompts) - len(unique), source_rows=len(prompts), columns=columns)


def check_prompt(value: Any, row: int) -> Any:
    """A non-empty string, or a non-empty list of {role, content} messages ending with a user (or system) turn."""
    if isinstance(value, str):
        if not value.strip():
            raise DataError("empty", row, "prompt")
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        if value[-1]["role"] == "assistant":
            raise DataError("ends with an assistant message: a prompt ends where the answer starts", row, "prompt")
        return [{"role": m["role"], "content": m.get("content", "")} for m in value]
    raise DataError(f"must be a string or a list of messages, got {value!r:.60}", row, "prompt")


def prompt_of_conversation(messages: Any, row: int) -> list[dict]:
    """The messages before the conversation's last assistant message."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise DataError(f"must be a list of messages, got {messages!r:.60}", row, "messages")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    if last == 0:
        raise DataError("no user turn before the first answer", row, "messages")
    return check_prompt(messages[:last], row)
