"""Render conversational pairs to text with a chat template, and find where the response starts."""

from __future__ import annotations

from pathlib import Path

from jinja2 import TemplateError

from amapo.data.errors import DataError
from amapo.data.pairs import Message


def resolve_chat_template(tokenizer, chat_template: str | None) -> str | None:
    """The template to render with: ``chat_template`` (a Jinja string or a .jinja file) over the tokenizer's own.

    Returns None when the tokenizer's own template is to be used. Raises ValueError when there is none.
    """
    if chat_template is None:
        if getattr(tokenizer, "chat_template", None):
            return None
        raise ValueError(
            f"the dataset is conversational but the tokenizer {type(tokenizer).__name__} has no chat template: "
            "pass chat_template= (a Jinja template string, or the path to a .jinja file)"
        )
    return read_chat_template(chat_template)


def is_jinja_text(value: str) -> bool:
    return "{{" in value or "{%" in value


def read_chat_template(value: str) -> str:
    """A chat template given as Jinja text (kept as is) or as the path of a file holding it (read)."""
    if is_jinja_text(value):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"chat_template {value!r} is neither Jinja text nor an existing file")
    return path.read_text(encoding="utf-8")


def _render(tokenizer, messages: list[Message], template: str | None, *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
    )


def render_pair(
    tokenizer, prompt: list[Message], responses: dict[str, list[Message]], template: str | None, *, row: int | None
) -> tuple[str, dict[str, str]]:
    """(prompt text, {field: response text}): the response text is what the full conversation adds to the prompt.

    The prompt is rendered with the generation prompt (e.g. "<|assistant|>\\n"), so the response text starts
    with the answer itself. A template that renders the prompt differently inside the full conversation (the
    rendered prompt is not a prefix) gives no place to cut: DataError.
    """
    field = "prompt"
    if not prompt:  # the template has nothing to render (transformers raises a bare ValueError)
        raise DataError("the prompt has no messages", row, field)
    try:
        prompt_text = _render(tokenizer, prompt, template, generation_prompt=True)
        response_texts = {}
        for field, messages in responses.items():  # ``field`` also names a failure below
            full_text = _render(tokenizer, prompt + messages, template, generation_prompt=False)
            if not full_text.startswith(prompt_text):
                raise DataError(
                    "the chat template renders the prompt (with add_generation_prompt=True) differently inside the "
                    f"full conversation, so the response cannot be cut out: prompt {prompt_text[-60:]!r} vs full "
                    f"{full_text[len(prompt_text) - 60 : len(prompt_text)]!r}",
                    row,
                    field,
                )
            response_texts[field] = full_text[len(prompt_text) :]
    except TemplateError as err:
        raise DataError(f"the chat template failed: {err}", row, field) from err
    return prompt_text, response_texts
