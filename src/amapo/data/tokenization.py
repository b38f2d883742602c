"""Turn standard-form pairs into token ids: one prompt, two responses, each response ending with EOS.

Plain pairs: ``prompt_ids = tokenizer(prompt)`` with special tokens (BOS where the tokenizer adds one). A
response is tokenized together with its prompt, ``tokenizer(prompt + response)``, and its ids are what comes
after the prompt ids, so the tokens at the seam are the ones the model will read. When the prompt ids are
not a prefix of the joint ids (a merge across the seam), the response is tokenized alone without special
tokens and appended; ``tokenize_dataset`` logs one warning with the number of such rows.

Conversational pairs: rendered with the chat template (``amapo.data.chat``); the rendered text already
holds BOS, so it is tokenized with ``add_special_tokens=False`` (no double BOS), seam checked the same way.

Responses end at EOS: when the template closes the turn with EOS followed only by whitespace ("</s>\\n"),
the response is cut right after its last EOS, since the model must learn to stop at EOS, not to emit the
newline that the template writes between turns; otherwise EOS is appended unless already last.

BOS is never added twice: a prompt whose text starts with the BOS text (pre-rendered) would get the
tokenizer's BOS too, and the duplicate is dropped. BOS later in a prompt is left alone (Llama-2's template,
rendered or pre-rendered, opens every user turn with BOS); BOS in a response, which no template writes there,
raises DataError (the text holds the BOS text, e.g. an HTML "<s>" under Llama's tokenizer). Then
``truncation``.

A pair whose two responses are the same tokens after truncation (the ids the loss reads) raises DataError naming
the row (dropped and counted with ``drop_invalid``), as identical texts do (``amapo.data.pairs``): its margin is 0
whatever the model, so it teaches nothing and would leave train_loss at the loss's value at margin 0. Responses
that share a long start get there when ``--max_length`` keeps only that start; texts that differ only in what the
tokenizer normalizes away get there without truncation.

``rendering="handbook"`` instead builds the token sequences of AMaPO's and SimPO's released trainers
(alignment-handbook's rendering, their BOS / EOS and truncation rules): ``amapo.data.handbook``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import datasets

from amapo.data import handbook
from amapo.data.caching import SOURCE_DIGEST
from amapo.data.chat import render_pair, resolve_chat_template
from amapo.data.errors import DataError
from amapo.data.invalid import drop_invalid_rows
from amapo.data.pairs import MISSING, standardize_pair
from amapo.data.truncation import check_truncation_options, truncate_pair
from amapo.errors import UserError

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("prompt", "chosen", "rejected")
CHAT_RENDERINGS = ("amapo", "handbook")
_SEAM_COLUMN = "_seam_fallbacks"  # internal: counted by tokenize_dataset, then dropped


def _ids(tokenizer, text: str, *, add_special_tokens: bool) -> list[int]:
    # verbose=False: long texts are expected here (they are truncated below), not a mistake worth a warning.
    return list(tokenizer(text, add_special_tokens=add_special_tokens, verbose=False)["input_ids"])


def response_ids_after(
    tokenizer, prompt_text: str, prompt_ids: list[int], response_text: str, *, add_special_tokens: bool
) -> tuple[list[int], bool]:
    """(the response's ids as they follow the prompt, whether the seam fallback was needed)."""
    joint = _ids(tokenizer, prompt_text + response_text, add_special_tokens=add_special_tokens)
    if joint[: len(prompt_ids)] == prompt_ids:
        return joint[len(prompt_ids) :], False
    return _ids(tokenizer, response_text, add_special_tokens=False), True


def end_at_eos(ids: list[int], tokenizer) -> list[int]:
    """``ids`` cut after their last EOS when only whitespace follows it, else with EOS appended unless last."""
    eos = tokenizer.eos_token_id
    if eos in ids:
        last = len(ids) - 1 - ids[::-1].index(eos)
        if not tokenizer.decode(ids[last + 1 :]).strip():
            return ids[: last + 1]
    return ids if ids[-1:] == [eos] else [*ids, eos]


def _check_no_bos_in_responses(responses: dict[str, list[int]], bos: int | None, eos: int, row: int | None) -> None:
    if bos is None or bos == eos:  # GPT-2 style tokenizers use one token for both: EOS is expected inside
        return
    for field, ids in responses.items():
        if bos in ids:
            raise DataError("holds the BOS token (the text contains the BOS text)", row, field)


def encode_pair(
    row: dict, tokenizer, *, chat_template: str | None, row_index: int | None, rendering: str = "amapo"
) -> tuple[dict, int]:
    """(``tokenize_pair``'s ids before truncation, the number of responses that needed the seam fallback)."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer {type(tokenizer).__name__} has no EOS token: set tokenizer.eos_token")
    prompt, chosen, rejected = standardize_pair(
        row.get("prompt", MISSING), row.get("chosen", MISSING), row.get("rejected", MISSING), row=row_index
    )
    if rendering == "handbook":
        template = None if isinstance(prompt, str) else resolve_chat_template(tokenizer, chat_template)
        responses = {"chosen": chosen, "rejected": rejected}
        return handbook.encode_pair(tokenizer, prompt, responses, template, row=row_index)
    if isinstance(prompt, str):
        prompt_text, response_texts, special = prompt, {"chosen": chosen, "rejected": rejected}, True
    else:
        template = resolve_chat_template(tokenizer, chat_template)
        responses = {"chosen": chosen, "rejected": rejected}
        prompt_text, response_texts = render_pair(tokenizer, prompt, responses, template, row=row_index)
        special = False
    prompt_ids = _ids(tokenizer, prompt_text, add_special_tokens=special)
    encoded, fallbacks = {}, 0
    for field, text in response_texts.items():
        ids, fell_back = response_ids_after(tokenizer, prompt_text, prompt_ids, text, add_special_tokens=special)
        fallbacks += fell_back
        ids = end_at_eos(ids, tokenizer)
        if ids == [tokenizer.eos_token_id]:
            raise DataError("response is empty (no token before EOS)", row_index, field)
        encoded[field] = ids
    bos = tokenizer.bos_token_id
    _check_no_bos_in_responses(encoded, bos, tokenizer.eos_token_id, row_index)
    while bos is not None and prompt_ids[:2] == [bos, bos]:
        prompt_ids = prompt_ids[1:]
    if not prompt_ids:
        raise DataError(
            "the prompt has no tokens and the tokenizer adds no BOS: nothing to condition on", row_index, "prompt"
        )
    return {
        "prompt_input_ids": prompt_ids,
        "chosen_input_ids": encoded["chosen"],
        "rejected_input_ids": encoded["rejected"],
    }, fallbacks


def tokenize_pair(
    row: dict,
    tokenizer,
    *,
    max_length: int,
    max_prompt_length: int,
    truncation_mode: str = "keep_end",
    chat_template: str | None = None,
    row_index: int | None = None,
    rendering: str = "amapo",
) -> dict[str, Any]:
    """One standard-form pair as ``prompt_input_ids`` / ``chosen_input_ids`` / ``rejected_input_ids`` and
    ``prompt_truncated`` / ``chosen_truncated`` / ``rejected_truncated`` (rules in the module docstrings).

    The response ids are the response tokens only; the model reads ``prompt_input_ids + chosen_input_ids``.
    """
    check_truncation_options(max_length, max_prompt_length, truncation_mode)
    check_rendering(rendering)
    ids, _ = encode_pair(row, tokenizer, chat_template=chat_template, row_index=row_index, rendering=rendering)
    return _truncate(ids, tokenizer, max_length, max_prompt_length, truncation_mode, row_index, rendering)


def check_rendering(rendering: str) -> None:
    """UserError unless ``rendering`` is one of ``CHAT_RENDERINGS`` (the one check: train, eval and the data path)."""
    if rendering not in CHAT_RENDERINGS:
        raise UserError(f"--chat_rendering must be one of {', '.join(CHAT_RENDERINGS)}, got {rendering!r}")


def _truncate(
    ids: dict, tokenizer, max_length: int, max_prompt_length: int, mode: str, row: int | None, rendering: str
) -> dict:
    limits = {"max_length": max_length, "max_prompt_length": max_prompt_length, "truncation_mode": mode}
    if rendering == "amapo":
        limits.update(bos_token_id=tokenizer.bos_token_id, row=row)
    truncate = handbook.truncate_pair if rendering == "handbook" else truncate_pair
    out = truncate(ids["prompt_input_ids"], ids["chosen_input_ids"], ids["rejected_input_ids"], **limits)
    check_responses_differ(out, ids, row, max_length, max_prompt_length)
    return out


def check_responses_differ(out: dict, ids: dict, row: int | None, max_length: int, max_prompt_length: int) -> None:
    """DataError naming the row when the truncated pair ``out`` (from ``ids``) holds the same response tokens twice,
    saying what made them so: the truncation (how many tokens it kept, after which prompt), or the tokenizer."""
    if out["chosen_input_ids"] != out["rejected_input_ids"]:
        return
    if not (out["chosen_truncated"] or out["rejected_truncated"]):
        raise DataError(
            "tokenizes to the same tokens as chosen (the texts differ only in what the tokenizer normalizes away)",
            row,
            "rejected",
        )
    kept, prompt = len(out["chosen_input_ids"]), len(out["prompt_input_ids"])
    if out["prompt_truncated"]:
        prompt_note = f"the prompt cut to {prompt} tokens by --max_prompt_length {max_prompt_length}"
    else:
        prompt_note = f"a {prompt}-token prompt"
    longer = max(len(ids["chosen_input_ids"]), len(ids["rejected_input_ids"]))
    raise DataError(
        f"identical to chosen after truncation (--max_length {max_length} keeps the first {kept} of up to {longer} "
        f"tokens of each response, after {prompt_note}, and both responses start with those {kept}); raise "
        "--max_length so that they differ (or, in training, pass --drop_invalid_rows true to drop such rows)",
        row,
        "rejected",
    )


def tokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer,
    *,
    max_length: int,
    max_prompt_length: int,
    truncation_mode: str = "keep_end",
    chat_template: str | None = None,
    num_proc: int | None = None,
    drop_invalid: bool = False,
    dropped: Counter | None = None,
    rendering: str = "amapo",
    name: str | None = None,
) -> datasets.Dataset:
    """``tokenize_pair`` over every row (errors name the row index); the text columns are dropped, the
    passthrough columns (e.g. ``offset``, ``ref_chosen_logps``) kept. Logs one warning when the seam fallback
    was needed; prints one line to stderr (``truncation_report``) when truncation cut anything, naming the dataset
    as ``name`` (the counts of a result: ``truncation_counts``, from its ``*_truncated`` columns). With
    ``drop_invalid``, rows that cannot be tokenized (e.g. a response emptied by truncation, or both responses
    truncated to the same tokens) are dropped and counted per reason into ``dropped``.
    """
    check_truncation_options(max_length, max_prompt_length, truncation_mode)
    check_rendering(rendering)
    missing = [name for name in ("chosen", "rejected") if name not in dataset.column_names]
    if missing:
        raise DataError(f"no column {missing}: convert the dataset with load_preference_dataset first")
    if len(dataset) == 0:
        raise DataError("the dataset has no rows")
    if isinstance(dataset.features.get("chosen"), datasets.List | datasets.Sequence | list):  # conversational
        chat_template = resolve_chat_template(tokenizer, chat_template)  # fail once, before any row; read a file once

    def tokenize_row(row: dict, index: int, code_version: str) -> dict:
        ids, fallbacks = encode_pair(row, tokenizer, chat_template=chat_template, row_index=index, rendering=rendering)
        out = _truncate(ids, tokenizer, max_length, max_prompt_length, truncation_mode, index, rendering)
        out[_SEAM_COLUMN] = fallbacks
        return out

    if drop_invalid:
        dataset = drop_invalid_rows(
            dataset, lambda row, index: tokenize_row(row, index, SOURCE_DIGEST), stage="tokenization",
            dropped=dropped, num_proc=num_proc,
        )  # fmt: skip
    tokenized = dataset.map(
        tokenize_row,
        with_indices=True,
        fn_kwargs={"code_version": SOURCE_DIGEST},  # see amapo.data.caching
        remove_columns=[name for name in TEXT_COLUMNS if name in dataset.column_names],
        num_proc=num_proc,
        desc="Tokenizing preference pairs",
    )
    seam_rows = sum(count > 0 for count in tokenized[_SEAM_COLUMN])
    if seam_rows:
        logger.warning(
            "%d of %d rows: the prompt tokens were not a prefix of prompt+response tokens (a merge across the seam); "
            "%s",
            seam_rows,
            len(tokenized),
            "the other response starts with the prompt's last token (amapo.data.handbook)"
            if rendering == "handbook"
            else "their responses were tokenized alone and appended",
        )
    report = truncation_report(tokenized, name or "dataset", max_length, max_prompt_length)
    if report and os.environ.get("RANK", "0") == "0":  # one line per run, not per process
        print(report, file=sys.stderr)
    return tokenized.remove_columns(_SEAM_COLUMN)


@dataclass(frozen=True)
class TruncationCounts:
    """How many of ``total`` tokenized pairs truncation cut: ``pairs`` lost response tokens (``chosen`` and
    ``rejected`` count the responses shortened), ``prompts`` lost prompt tokens."""

    total: int
    pairs: int
    chosen: int
    rejected: int
    prompts: int


def truncation_counts(tokenized: datasets.Dataset) -> TruncationCounts:
    """The counts of ``tokenize_dataset``'s ``*_truncated`` columns."""
    prompts, chosen, rejected = (tokenized[f"{field}_truncated"] for field in TEXT_COLUMNS)
    pairs = sum(c or r for c, r in zip(chosen, rejected, strict=True))
    return TruncationCounts(len(tokenized), pairs, sum(chosen), sum(rejected), sum(prompts))


def truncation_report(tokenized: datasets.Dataset, name: str, max_length: int, max_prompt_length: int) -> str | None:
    """One line saying how many pairs truncation cut (None if none): an INFO log nobody reads hid that the
    built-in 64-token limit cut 96% of real responses."""
    n = truncation_counts(tokenized)
    if n.pairs:
        prompts = f"; {n.prompts} prompts cut to --max_prompt_length {max_prompt_length}" if n.prompts else ""
        return (
            f"amapo: {name}: {n.pairs} of {n.total} pairs ({100 * n.pairs / n.total:.0f}%) cut to --max_length "
            f"{max_length} ({n.chosen} chosen, {n.rejected} rejected responses shortened{prompts}); raise "
            "--max_length to keep whole responses"
        )
    if n.prompts:
        return (
            f"amapo: {name}: {n.prompts} of {n.total} prompts cut to --max_prompt_length {max_prompt_length} (no "
            "response shortened); raise --max_prompt_length and --max_length to keep whole prompts"
        )
    return None
