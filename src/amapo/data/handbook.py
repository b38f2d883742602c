"""alignment-handbook's token sequences, as AMaPO's and SimPO's released trainers build them (``--chat_rendering
handbook``).

The AMaPO release (github Shiroha-Offical/AMaPO: ``scripts/run_AMaPO.py`` ``apply_chat_template(task="simpo")``,
``scripts/amapo_trainer.py`` ``tokenize_row``; the same code as SimPO's ``run_simpo.py`` and TRL 0.9's DPO
tokenization) feeds its model these tokens, reproduced here token for token (tested against the release's own
code on a fixture, ``tests/data/handbook``):

1. **Rendering.** An empty system message goes first when the prompt has none and the template's text mentions
   "system" or "<|im_start|>"; the prompt is rendered *without* the generation prompt, and each response from its
   own messages alone, a leading BOS text removed. So the assistant header ("<|assistant|>\\n",
   "<|start_header_id|>assistant<|end_header_id|>\\n\\n") belongs to the response and counts in |y|.
2. **Tokens.** Every text with ``add_special_tokens=False``. A response's ids are those of prompt + response after
   the prompt's own ids; when the prompt's last token merges with the response's first, the merged token starts
   the response. BOS is put before the prompt unless it is already first; EOS is appended to each response
   unless it is already last (a template that closes a turn with "</s>\\n" gives "...</s>\\n</s>").
3. **Truncation.** With L the longer response: if len(prompt) + L > max_length the prompt is cut to
   max_prompt_length tokens (keep_end: its last tokens, a leading BOS not kept; keep_start: its first), and if
   prompt + L is still too long both responses are cut to max_length - max_prompt_length tokens (not to what the
   prompt leaves).

Plain (string) rows skip step 1: their texts are taken as rendered. Choices where the release fails or cannot be
followed: a tokenizer without BOS gets none (the release prepends ``None`` and fails); a pair where only one
response merges with the prompt's last token would need two prompts (the release gives each sequence its own),
and amapo's batches share one per pair: the prompt is the shorter, and the other response starts with the
prompt's last token, so the model reads the release's tokens but that response counts one token more in |y|
(counted as a seam fallback and reported, ``amapo.data.tokenization``).
"""

from __future__ import annotations

from jinja2 import TemplateError

from amapo.data.errors import DataError
from amapo.data.pairs import Message, Text


def mentions_system(template: str) -> bool:
    """The release's test for inserting an empty system message (alignment-handbook ``maybe_insert_system_message``)."""
    return "system" in template or "<|im_start|>" in template


def render_texts(
    tokenizer, prompt: Text, responses: dict[str, Text], template: str, *, row: int | None
) -> tuple[str, dict[str, str]]:
    """(prompt text, {field: response text}) as the release renders them (step 1); strings are taken as they are."""
    if isinstance(prompt, str):
        return prompt, dict(responses)
    if not prompt:
        raise DataError("the prompt has no messages", row, "prompt")
    if prompt[0]["role"] != "system" and mentions_system(template):
        prompt = [{"role": "system", "content": ""}, *prompt]
    field = "prompt"
    try:
        prompt_text = _render(tokenizer, prompt, template)
        texts = {}
        for field, messages in responses.items():  # ``field`` also names a failure below
            text = _render(tokenizer, messages, template)
            bos = tokenizer.bos_token
            texts[field] = text[len(bos) :] if bos and text.startswith(bos) else text
    except TemplateError as err:
        raise DataError(f"the chat template failed: {err}", row, field) from err
    return prompt_text, texts


def _render(tokenizer, messages: list[Message], template: str) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def split_after_prompt(tokenizer, prompt_text: str, prompt_ids: list[int], response_text: str):
    """(prompt ids, response ids) of prompt + response, the merged seam token (if any) going to the response."""
    joint = _ids(tokenizer, prompt_text + response_text)
    start = len(prompt_ids) - (joint[: len(prompt_ids)] != prompt_ids)
    return joint[:start], joint[start:]


def encode_pair(
    tokenizer, prompt: Text, responses: dict[str, Text], template: str | None, *, row: int | None
) -> tuple[dict[str, list[int]], int]:
    """(``prompt_input_ids`` / ``chosen_input_ids`` / ``rejected_input_ids`` before truncation, seam fallbacks)."""
    prompt_text, texts = render_texts(tokenizer, prompt, responses, template or tokenizer.chat_template, row=row)
    prompt_ids = _ids(tokenizer, prompt_text)
    split = {field: split_after_prompt(tokenizer, prompt_text, prompt_ids, text) for field, text in texts.items()}
    shared = min((ids for ids, _ in split.values()), key=len)
    encoded, fallbacks = {}, 0
    for field, (own_prompt, response) in split.items():
        if own_prompt[: len(shared)] != shared or len(own_prompt) > len(shared) + 1:
            raise DataError(  # the release refuses such a pair as well
                "the prompt tokenizes differently before chosen and before rejected (beyond its last token)", row, field
            )
        if own_prompt != shared:  # the other response merged with the prompt's last token, this one did not
            response, fallbacks = own_prompt[len(shared) :] + response, fallbacks + 1
        encoded[field] = response
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is not None and shared[:1] != [bos]:
        shared = [bos, *shared]
    for field, ids in encoded.items():
        if ids[-1:] != [eos]:
            ids = [*ids, eos]
        if ids == [eos]:
            raise DataError("response is empty (no token before EOS)", row, field)
        encoded[field] = ids
    if not shared:
        raise DataError("the prompt has no tokens and the tokenizer has no BOS: nothing to condition on", row, "prompt")
    return {"prompt_input_ids": shared, **{f"{f}_input_ids": ids for f, ids in encoded.items()}}, fallbacks


def truncate_pair(
    prompt_ids: list[int],
    chosen_ids: list[int],
    rejected_ids: list[int],
    *,
    max_length: int,
    max_prompt_length: int,
    truncation_mode: str = "keep_end",
) -> dict[str, list[int] | bool]:
    """The release's truncation rule (step 3 above), with ``*_truncated`` flags."""
    longer = max(len(chosen_ids), len(rejected_ids))
    prompt = prompt_ids
    if len(prompt) + longer > max_length:
        prompt = prompt[:max_prompt_length] if truncation_mode == "keep_start" else prompt[-max_prompt_length:]
    out: dict[str, list[int] | bool] = {"prompt_input_ids": prompt, "prompt_truncated": len(prompt) < len(prompt_ids)}
    cut = len(prompt) + longer > max_length
    for field, ids in (("chosen", chosen_ids), ("rejected", rejected_ids)):
        kept = ids[: max_length - max_prompt_length] if cut else ids
        out[f"{field}_input_ids"], out[f"{field}_truncated"] = kept, len(kept) < len(ids)
    return out
