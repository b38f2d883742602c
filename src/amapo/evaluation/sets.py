"""The eval sets of ``amapo eval`` / ``analyze``: which sets (given, or those of the training run), how they are
tokenized (as the run was), and loading one so that any problem names the set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from amapo.builtin import resolve_source
from amapo.data import load_preference_dataset, tokenize_dataset
from amapo.data.sources import parse_named_set
from amapo.data.tokenization import check_rendering
from amapo.errors import UserError
from amapo.evaluation.checks import check_limits
from amapo.options_json import parse_json_mapping
from amapo.run_files import CONFIG_FILE

SET_EXAMPLE = "held_out=pairs.jsonl@train"
MAPPING_EXAMPLE = '{"chosen": "response_j"}'


@dataclass(frozen=True)
class EvalSet:
    """One named set of pairs, and where it was asked for (``origin``: an option, or the run's config file)."""

    name: str
    source: str
    split: str
    origin: str
    dataset_config: str | None = None

    @property
    def label(self) -> str:
        return f"{self.origin} {self.name}={self.source}@{self.split}"


def check_named_sets(option: str, entries: list[str]) -> None:
    """Each entry is NAME=SOURCE[@SPLIT] and names its own set."""
    names: set[str] = set()
    for entry in entries:
        name, source, _ = parse_named_set(entry)
        if "=" not in entry or not name or not source:
            raise UserError(f"--{option} entries must be NAME=SOURCE[@SPLIT], e.g. {SET_EXAMPLE}, got {entry!r}")
        if name in names:
            raise UserError(f"--{option} names the set {name!r} twice: give each set its own name")
        names.add(name)


def given_sets(option: str, entries: list[str]) -> list[EvalSet]:
    return [EvalSet(*parse_named_set(entry), origin=f"--{option}") for entry in entries]


def run_sets(trained: dict[str, Any], model: str) -> list[EvalSet]:
    """The sets an ``amapo train`` run evaluated on, named as training names them (``amapo.train.run.eval_splits``):
    ``eval_split`` of its ``dataset`` as "eval", then its ``eval_datasets``; loaded with its ``dataset_config``."""
    origin = f"{model.rstrip('/')}/{CONFIG_FILE}"
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


def load_set(
    eval_set: EvalSet,
    tokenizer,
    limits: dict[str, Any],
    mapping: dict[str, str] | None,
    note: str = "",
    role_mapping: dict[str, str] | None = None,
):
    """(pairs in the standard form, the same pairs tokenized); a problem with the set is a ``UserError`` naming it
    (a loading error adds ``note``: where the column mapping came from)."""
    try:
        pairs = load_preference_dataset(
            resolve_source(eval_set.source),
            split=eval_set.split,
            dataset_config=eval_set.dataset_config,
            column_mapping=mapping,
            role_mapping=role_mapping,
        )
    except (ValueError, FileNotFoundError) as err:  # DataError, and datasets' unknown split, file type or Hub name
        raise UserError(f"{eval_set.label}: {one_line(err)}" + (f" ({note})" if note else "")) from None
    if len(pairs) == 0:
        raise UserError(f"{eval_set.label}: no pairs in it (an empty file or split)")
    try:
        tokenized = tokenize_dataset(pairs, tokenizer, **limits, name=eval_set.label)
    except UserError as err:  # a row that cannot be tokenized within the limits
        raise UserError(f"{eval_set.label}: {one_line(err)}") from None
    return pairs, tokenized


def one_line(err: Exception) -> str:
    return " ".join(str(err).split())
