"""Fit a tokenized pair into ``max_length`` tokens, prompt first, never leaving a response empty silently.

Rule (TRL's, with its empty-response trap closed): when ``len(prompt) + max(len(chosen), len(rejected)) >
max_length``,

1. the prompt is cut to ``max_prompt_length`` tokens: ``keep_end`` keeps its last tokens (the question is
   usually at the end) but keeps a leading BOS, i.e. BOS + tail (a tail that itself starts with BOS, as a
   Llama-2 turn does, keeps one BOS); ``keep_start`` keeps its first tokens;
2. if still too long, both responses are cut to ``max_length - len(prompt)`` tokens, keeping their start (a
   cut response loses its EOS: the model is not taught to stop where the text was merely cut).

A prompt left with no token besides BOS, or a response left with no token, raises DataError naming the row,
the field and the limit. Since ``max_prompt_length < max_length`` is enforced, step 2 always leaves at least
one response token; the check stays as a guard.
"""

from __future__ import annotations

from amapo.data.errors import DataError

TRUNCATION_MODES = ("keep_end", "keep_start")


def check_truncation_options(max_length: int, max_prompt_length: int, truncation_mode: str) -> None:
    """ValueError naming the option when the limits cannot work together."""
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {truncation_mode!r}")
    if not isinstance(max_prompt_length, int) or max_prompt_length < 1:
        raise ValueError(f"max_prompt_length must be a positive int, got {max_prompt_length!r}")
    if not isinstance(max_length, int) or max_length <= max_prompt_length:
        raise ValueError(
            f"max_length ({max_length!r}) must be greater than max_prompt_length ({max_prompt_length}), "
            "so that every response keeps at least one token"
        )


def truncate_prompt(prompt_ids: list[int], max_prompt_length: int, truncation_mode: str, bos_token_id: int | None):
    """The prompt cut to ``max_prompt_length`` tokens (``keep_end`` keeps a leading BOS: BOS + tail)."""
    if len(prompt_ids) <= max_prompt_length:
        return prompt_ids
    if truncation_mode == "keep_start":
        return prompt_ids[:max_prompt_length]
    if bos_token_id is not None and prompt_ids[0] == bos_token_id:
        tail = max_prompt_length - 1
        kept = prompt_ids[:1] + prompt_ids[len(prompt_ids) - tail :]  # not [-tail:]: that is everything at tail=0
        while kept[:2] == [bos_token_id, bos_token_id]:  # the cut fell on a turn's own BOS (Llama-2 prompts)
            kept = kept[1:]
        return kept
    return prompt_ids[len(prompt_ids) - max_prompt_length :]


def truncate_pair(
    prompt_ids: list[int],
    chosen_ids: list[int],
    rejected_ids: list[int],
    *,
    max_length: int,
    max_prompt_length: int,
    truncation_mode: str = "keep_end",
    bos_token_id: int | None = None,
    row: int | None = None,
) -> dict[str, list[int] | bool]:
    """The pair's ids after the rule in the module docstring, with ``*_truncated`` flags."""
    out = {
        "prompt_input_ids": prompt_ids,
        "chosen_input_ids": chosen_ids,
        "rejected_input_ids": rejected_ids,
        "prompt_truncated": False,
        "chosen_truncated": False,
        "rejected_truncated": False,
    }
    if len(prompt_ids) + max(len(chosen_ids), len(rejected_ids)) <= max_length:
        return out
    kept_prompt = truncate_prompt(prompt_ids, max_prompt_length, truncation_mode, bos_token_id)
    prompt_truncated = len(kept_prompt) < len(prompt_ids)
    content = kept_prompt[1:] if bos_token_id is not None and kept_prompt[:1] == [bos_token_id] else kept_prompt
    if prompt_truncated and not content:
        raise DataError(
            f"the prompt cannot fit: max_prompt_length={max_prompt_length} leaves no prompt token besides BOS",
            row,
            "prompt",
        )
    out["prompt_input_ids"] = kept_prompt
    out["prompt_truncated"] = prompt_truncated
    budget = max_length - len(kept_prompt)
    for field, ids in (("chosen", chosen_ids), ("rejected", rejected_ids)):
        if len(ids) > budget:
            if budget <= 0:
                raise DataError(f"response is empty after truncation to max_length={max_length}", row, field)
            out[f"{field}_input_ids"] = ids[:budget]
            out[f"{field}_truncated"] = True
    return out
