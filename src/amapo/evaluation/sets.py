"""The eval sets of ``amapo eval`` / ``analyze`` / ``compare``: which sets (given, or those of the training run), how
they are tokenized (as the run was), and loading one so that any problem names the set.

A set is NAME=SOURCE[@SPLIT]. Its format (pairs, RM-Bench, scored responses: ``amapo.evaluation.response_sets``) is
read from its columns, or named before the source: ``rmb=rm-bench:./total_dataset.json``. Two shorthands name the
public sets the AMaPO paper reports (``SHORTHANDS``): ``rm-bench`` and ``rm-robustness``.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from amapo.builtin import is_builtin, resolve_source
from amapo.data import tokenize_dataset
from amapo.data.errors import DataError
from amapo.data.formats import standardize_preference_dataset
from amapo.data.loading import load_raw_dataset
from amapo.data.sources import parse_named_set
from amapo.data.tokenization import check_rendering
from amapo.errors import UserError
from amapo.evaluation.response_sets import (
    PAIRS,
    SET_FORMATS,
    ResponseSet,
    detect_format,
    read_response_set,
    response_pairs,
    source_error,
)
from amapo.option_checks import check_limits
from amapo.options_json import parse_json_mapping
from amapo.run_files import CONFIG_FILE

SET_EXAMPLE = "held_out=pairs.jsonl@train"
MAPPING_EXAMPLE = '{"chosen": "response_j"}'
AUTO = "auto"
# The public sets the AMaPO paper reports ranking accuracy on, by the names of its tables (its release's eval/README):
# RM-Bench (THU-KEG), and the in-distribution / prompt- / response- / mutual-OOD sets of Hong et al. (ICML 2025).
SHORTHANDS = {
    "rm-bench": ["rm_bench=rm-bench:THU-KEG/RM-Bench@train"],
    "rm-robustness": [
        "in_distribution=rm-robustness/ultrafeedback-valid-1-in-domain@train",
        "prompt_ood=rm-robustness/ultrafeedback-valid-2-prompt-ood@train",
        "response_ood=rm-robustness/ultrafeedback-valid-3-response-ood@train",
        "mutual_ood=rm-robustness/ultrafeedback-valid-4-mutual-ood@train",
    ],
}


@dataclass(frozen=True)
class EvalSet:
    """One named set of pairs, and where it was asked for (``origin``: an option, or the run's config file)."""

    name: str
    source: str
    split: str
    origin: str
    dataset_config: str | None = None
    format: str = AUTO  # or one of response_sets.SET_FORMATS

    @property
    def label(self) -> str:
        kind = "" if self.format == AUTO else f"{self.format}:"
        return f"{self.origin} {self.name}={kind}{self.source}@{self.split}"


def split_format(source: str) -> tuple[str, str]:
    """(format, source) of 'FORMAT:SOURCE' for a known format, else ('auto', source)."""
    kind, colon, rest = source.partition(":")
    return (kind, rest) if colon and kind in SET_FORMATS else (AUTO, source)


def misspelt_format(source: str) -> str | None:
    """The known format that the 'WORD:' before ``source`` looks like a typo of, unless ``source`` exists as is."""
    word, colon, _ = source.partition(":")
    if not colon or "/" in word or Path(source).expanduser().exists():
        return None
    close = difflib.get_close_matches(word, SET_FORMATS, n=1, cutoff=0.75)
    return close[0] if close else None


def expand_shorthands(entries: list[str]) -> list[str]:
    """Each shorthand (``SHORTHANDS``) replaced by the NAME=SOURCE@SPLIT entries it stands for."""
    return [expanded for entry in entries for expanded in SHORTHANDS.get(entry, [entry])]


def check_named_sets(option: str, entries: list[str]) -> None:
    """Each entry is NAME=[FORMAT:]SOURCE[@SPLIT] or a shorthand, and names its own set."""
    names: set[str] = set()
    shorthands = " or ".join(SHORTHANDS)
    for entry in expand_shorthands(entries):
        name, source, _ = parse_named_set(entry)
        if "=" not in entry or not name.strip() or not source.strip():
            raise UserError(
                f"--{option} entries must be NAME=SOURCE[@SPLIT] (e.g. {SET_EXAMPLE}) or {shorthands}, got {entry!r}"
            )
        kind, rest = split_format(source)
        if not rest:
            raise UserError(f"--{option} {entry}: no source after {kind}:")
        if kind == AUTO and (close := misspelt_format(source)):
            raise UserError(
                f"--{option} {entry}: {source.partition(':')[0]!r} is not a set format (did you mean {close}:?); "
                f"the formats are {', '.join(SET_FORMATS)}"
            )
        if name in names:
            raise UserError(f"--{option} names the set {name!r} twice: give each set its own name")
        names.add(name)


def given_sets(option: str, entries: list[str]) -> list[EvalSet]:
    sets = []
    for entry in expand_shorthands(entries):
        name, source, split = parse_named_set(entry)
        kind, source = split_format(source)
        sets.append(EvalSet(name, source, split, origin=f"--{option}", format=kind))
    return sets


def run_sets(trained: dict[str, Any], model: str) -> list[EvalSet]:
    """The sets an ``amapo train`` run evaluated on, named as training names them (``amapo.train.run.eval_splits``):
    ``eval_split`` of its ``dataset`` as "eval", then its ``eval_datasets``; loaded with its ``dataset_config``.
    The built-in model's are those of recipe builtin (``trained`` holds its options)."""
    origin = "recipe builtin" if is_builtin(model) else f"{model.rstrip('/')}/{CONFIG_FILE}"
    config = trained.get("dataset_config")
    sets = []
    if trained.get("eval_split") and trained.get("dataset"):
        sets.append(EvalSet("eval", trained["dataset"], trained["eval_split"], origin, config))
    for entry in trained.get("eval_datasets") or []:
        sets.append(EvalSet(*parse_named_set(entry), origin=origin, dataset_config=config))
    return sets


def column_mapping(given: str | None, trained: dict[str, Any]) -> tuple[dict[str, str] | None, str]:
    """(``--column_mapping`` if given, else the run's (its data had those columns), '{}' meaning none; a note for
    messages when the run's is used, else '')."""
    value = given if given is not None else trained.get("column_mapping")
    mapping = parse_json_mapping("column_mapping", value, MAPPING_EXAMPLE) or None
    if mapping is None or given is not None:
        return mapping, ""
    return mapping, f"the run's column mapping {json.dumps(mapping)}; --column_mapping '{{}}' uses none"


def token_limits(trained: dict[str, Any], **given: Any) -> dict[str, Any]:
    """``tokenize_dataset``'s limits and rendering: each given option, else the run's (the tokens it was trained
    on), else train's default; checked together."""
    defaults = {"max_length": 1024, "max_prompt_length": 512, "truncation_mode": "keep_end", "chat_rendering": "amapo"}
    values = {key: trained.get(key, default) for key, default in defaults.items()}
    values.update({key: value for key, value in given.items() if value is not None})
    origin = f"options and the run's {CONFIG_FILE}" if trained else "options and their defaults"
    check_limits(values["max_length"], values["max_prompt_length"], values["truncation_mode"], origin)
    check_rendering(values["chat_rendering"])
    values["rendering"] = values.pop("chat_rendering")
    return values


def run_role_mapping(trained: dict[str, Any]) -> dict[str, str] | None:
    """The run's ``role_mapping`` (its data's roles are renamed the same way here), or None."""
    return parse_json_mapping("role_mapping", trained.get("role_mapping"), '{"human": "user"}') or None


@dataclass
class LoadedSet:
    """A set ready to score: its format, its rows (standard-form ``pairs``, or ``responses``), and the pairs that
    the model scores, tokenized."""

    format: str
    tokenized: datasets.Dataset
    pairs: datasets.Dataset | None = None
    responses: ResponseSet | None = None

    def prompts(self) -> list:
        return list(self.pairs["prompt"]) if self.responses is None else self.responses.prompts


def load_set(
    eval_set: EvalSet,
    tokenizer,
    limits: dict[str, Any],
    mapping: dict[str, str] | None,
    note: str = "",
    role_mapping: dict[str, str] | None = None,
) -> LoadedSet:
    """The set read, checked and tokenized; a problem with it is a ``UserError`` naming it (a loading error of a
    pairs set adds ``note``: where the column mapping came from)."""
    kind = None
    try:
        source = resolve_source(eval_set.source)
        raw = load_raw_dataset(source, split=eval_set.split, dataset_config=eval_set.dataset_config)
        if len(raw) == 0:
            raise UserError("no rows in it (an empty file or split)")
        kind = detect_format(raw) if eval_set.format == AUTO else eval_set.format
        if kind != PAIRS:
            return load_response_set(eval_set, read_response_set(raw, kind), tokenizer, limits)
        pairs = standardize_preference_dataset(raw, mapping, role_mapping=role_mapping)
    except (ValueError, FileNotFoundError) as err:  # DataError, and datasets' unknown split, file type or Hub name
        hint = f" ({note})" if note and kind == PAIRS else ""  # the column mapping applies to pairs only
        raise UserError(f"{eval_set.label}: {one_line(err)}{hint}") from None
    try:
        tokenized = tokenize_dataset(pairs, tokenizer, **limits, name=eval_set.label)
    except UserError as err:  # a row that cannot be tokenized within the limits
        raise UserError(f"{eval_set.label}: {one_line(err)}") from None
    return LoadedSet(PAIRS, tokenized, pairs=pairs)


def load_response_set(eval_set: EvalSet, responses: ResponseSet, tokenizer, limits: dict[str, Any]) -> LoadedSet:
    """Every response of the set as pairs through the tokenizer's chat template (plain text where it has none, as
    for a base model); a response cut to nothing names the set's own row and field."""
    conversational = bool(getattr(tokenizer, "chat_template", None))
    try:
        pairs = response_pairs(responses, conversational)
        tokenized = tokenize_dataset(pairs, tokenizer, **limits, name=eval_set.label)
    except DataError as err:
        raise source_error(err, responses) from None
    return LoadedSet(responses.format, tokenized, responses=responses)


def one_line(err: Exception) -> str:
    return " ".join(str(err).split())
