"""What one preference pair may hold, and how it is brought to the standard form.

Standard form: ``prompt``, ``chosen``, ``rejected`` are either all strings (plain) or all lists of
``{"role", "content"}`` messages (conversational: ``prompt`` is the messages before the answer, ``chosen`` and
``rejected`` the answer's messages, starting with an assistant turn). Every check names the row and field.

Conversions made here (each one unambiguous, and documented because the user may not expect it):

* no prompt: the prompt is the prefix that chosen and rejected share (``split_shared_prefix``);
* a string prompt beside conversational chosen/rejected is a copy of the user turn that the conversations
  already hold (HuggingFaceH4/ultrafeedback_binarized has this shape, and TRL reads it the same way): the
  prompt is taken from the conversations' shared prefix and the string is ignored;
* a conversational prompt beside string chosen/rejected: each string becomes one assistant message;
* conversational chosen/rejected that repeat the prompt messages at their start have them removed;
* messages keep only ``role`` and ``content`` (other keys, e.g. ``name``, are dropped so every row has the
  same Arrow type); roles are renamed by ``role_mapping`` and must then be one of ``ROLES``.

Every row of a dataset has one kind, plain or conversational (``row_kind``: the kind of its converted chosen
response): a mix would be formatted two ways in one run, so the conversion refuses the first row whose kind
differs from the first row's (``mixed_kinds``). A JSON file that mixes strings and lists in a column is refused
earlier, naming its line (``amapo.data.reading``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amapo.data.errors import DataError
from amapo.errors import UserError

Message = dict[str, str]
Text = str | list[Message]

RESPONSE_FIELDS = ("chosen", "rejected")
# The roles chat templates know; any other (ShareGPT's "human"/"gpt", ...) would render wrong or fail deep in a
# template, so it is an error naming the row, unless ``role_mapping`` renames it.
ROLES = ("system", "user", "assistant", "tool")
ROLE_MAPPING_HINT = """--role_mapping '{"human": "user", "gpt": "assistant"}'"""


class _Missing:
    """Marks a field the row does not have (distinct from a stored None)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def check_role_mapping(role_mapping: Mapping[str, str] | None) -> None:
    """A mapping whose every target is one of ``ROLES`` (checked once, before any row: a typo is one line)."""
    for source, target in (role_mapping or {}).items():
        if target not in ROLES:
            raise UserError(
                f"role_mapping maps {source!r} to {target!r}, which is not a role chat templates know; map to one of "
                f"{', '.join(ROLES)}"
            )


def check_messages(
    value: list, *, row: int | None, field: str, role_mapping: Mapping[str, str] | None = None
) -> list[Message]:
    """``value`` as a list of ``{"role", "content"}`` string messages, other keys dropped, roles renamed by
    ``role_mapping`` and checked against ``ROLES``."""
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise DataError(f"message {i} is a {type(message).__name__}, not a {{'role', 'content'}} dict", row, field)
        role, content = message.get("role"), message.get("content")
        if role is None or content is None:
            missing = "role" if role is None else "content"
            raise DataError(f"message {i} has no {missing!r} (keys: {sorted(message)})", row, field)
        if not isinstance(role, str) or not isinstance(content, str):
            bad, got = ("role", role) if not isinstance(role, str) else ("content", content)
            raise DataError(f"message {i}: {bad!r} is a {type(got).__name__}, expected str", row, field)
        role = (role_mapping or {}).get(role, role)
        if role not in ROLES:
            raise DataError(
                f"message {i} has role {role!r}, which chat templates do not know ({', '.join(ROLES)}); rename it "
                f"with {ROLE_MAPPING_HINT}",
                row,
                field,
            )
        messages.append({"role": role, "content": content})
    return messages


def check_text(value: Any, *, row: int | None, field: str, role_mapping: Mapping[str, str] | None = None) -> Text:
    """A string, or a list of messages; anything else (missing, None, a number, a dict) is a DataError."""
    if value is MISSING or value is None:
        raise DataError("missing (no value)", row, field)
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return check_messages(list(value), row=row, field=field, role_mapping=role_mapping)
    raise DataError(f"expected a string or a list of messages, got {type(value).__name__}: {value!r:.80}", row, field)


def split_shared_prefix(chosen: Text, rejected: Text, *, row: int | None) -> tuple[Text, Text, Text]:
    """(prompt, chosen, rejected) from two full texts: the prompt is what both start with.

    Messages: the prompt is every message before the first one that differs (normally all but the final
    assistant answer, as TRL's ``extract_prompt``). Strings: the shared characters are cut back to a whitespace
    boundary, and the whitespace goes to the responses: "Assistant: Yes." / "Assistant: Yes!" give prompt
    "Assistant:" and responses " Yes." / " Yes!", never a word split between prompt and response (TRL cuts at
    the first differing character), and the leading space stays with the word, where tokenizers put it.
    """
    if type(chosen) is not type(rejected):
        raise DataError("chosen and rejected must both be strings or both be lists of messages", row, "rejected")
    if chosen == rejected:
        raise DataError("identical to chosen", row, "rejected")
    cut = 0
    while cut < min(len(chosen), len(rejected)) and chosen[cut] == rejected[cut]:
        cut += 1
    if isinstance(chosen, list):
        return chosen[:cut], chosen[cut:], rejected[cut:]
    while cut > 0 and not chosen[cut - 1].isspace():
        cut -= 1
    while cut > 0 and chosen[cut - 1].isspace():
        cut -= 1
    return chosen[:cut], chosen[cut:], rejected[cut:]


def row_kind(chosen: Text) -> str:
    """'conversational' or 'plain': the kind of a converted pair, read from its chosen response."""
    return "conversational" if isinstance(chosen, list) else "plain"


def mixed_kinds(kind: str, first: tuple[str, int]) -> str:
    """The reason given for a row of kind ``kind`` when ``first`` is (kind, index) of the dataset's first row."""
    words = {"plain": "plain text", "conversational": "a list of messages"}
    return (
        f"{words[kind]}, but row {first[1]} is {words[first[0]]}; a dataset must use one format (plain strings or "
        "lists of messages) for every row"
    )


def _as_answer(prompt: list[Message], response: Text) -> list[Message]:
    """A conversational response: strings become one assistant message; a repeated prompt is removed."""
    if isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    if prompt and response[: len(prompt)] == prompt:
        return response[len(prompt) :]
    return response


def _check_response(response: Text, *, row: int | None, field: str) -> None:
    if isinstance(response, str):
        if not response.strip():
            raise DataError("response is empty", row, field)
        return
    if not response:
        raise DataError("response has no messages", row, field)
    if response[0]["role"] != "assistant":
        raise DataError(
            f"the response must start with an assistant message, not {response[0]['role']!r} "
            "(prompt messages belong in 'prompt')",
            row,
            field,
        )
    if not any(m["content"].strip() for m in response):
        raise DataError("response is empty", row, field)


def standardize_pair(
    prompt: Any, chosen: Any, rejected: Any, *, row: int | None, role_mapping: Mapping[str, str] | None = None
) -> tuple[Text, Text, Text]:
    """Check one pair and bring it to the standard form (see the module docstring); ``prompt`` may be MISSING."""
    chosen = check_text(chosen, row=row, field="chosen", role_mapping=role_mapping)
    rejected = check_text(rejected, row=row, field="rejected", role_mapping=role_mapping)
    responses_are_messages = isinstance(chosen, list) and isinstance(rejected, list)
    if prompt is MISSING or (isinstance(prompt, str) and responses_are_messages):
        prompt, chosen, rejected = split_shared_prefix(chosen, rejected, row=row)
    else:
        prompt = check_text(prompt, row=row, field="prompt", role_mapping=role_mapping)
        if isinstance(prompt, list):
            chosen, rejected = _as_answer(prompt, chosen), _as_answer(prompt, rejected)
        else:
            for field, response in zip(RESPONSE_FIELDS, (chosen, rejected), strict=True):
                if isinstance(response, list):
                    raise DataError("is a list of messages but the prompt is a string", row, field)
    _check_response(chosen, row=row, field="chosen")
    _check_response(rejected, row=row, field="rejected")
    if chosen == rejected:
        raise DataError("identical to chosen", row, "rejected")
    return prompt, chosen, rejected
