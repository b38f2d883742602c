"""From a YAML recipe and command-line flags of the same names to a ``TrainConfig``, checked in two passes.

1. amapo's own options (``TrainOptions``) are parsed and checked first, without transformers'
   ``TrainingArguments`` (whose import takes seconds): a bad option, a missing file or a bad dataset row is
   reported in about the time of ``import torch``; ``--help`` imports neither.
2. Then everything, ``TrainingArguments`` included, becomes the ``TrainConfig`` the run uses.

Which defaults apply: a recipe's (``--config``) over the dataclass defaults, flags over both. With no recipe,
no model and no dataset, the packaged ``builtin`` recipe runs (the laptop demo). With the built-in model
(``--model_name_or_path builtin:tiny-llama``) and no recipe, the options that fit that model come from the
``builtin`` recipe (``BUILTIN_MODEL_OPTIONS``); its synthetic data and eval sets never join a run on your data.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from amapo.errors import UserError
from amapo.hf_internals import training_argument_names
from amapo.recipes import available_recipes, recipe_path
from amapo.train.options import TrainOptions

if TYPE_CHECKING:
    from amapo.train.config import TrainConfig

DESCRIPTION = """Train a causal LM on preference pairs. A recipe (--config, YAML) sets options; flags of the same
names override it. With no --config, --model_name_or_path or --dataset, the packaged 'builtin' recipe runs: a
complete job on a laptop CPU. The defaults shown are those of a run on your own model and data."""

EPILOG = """Every option of transformers' TrainingArguments is accepted too (--report_to, --bf16, --deepspeed,
--gradient_accumulation_steps, --max_steps, --eval_strategy, ...): `amapo train --help-all` lists them all."""

BUILTIN_RECIPE = "builtin"
BUILTIN_MODEL = "builtin:tiny-llama"
# What the built-in tiny model needs whatever the data: a short max_length, a learning rate that moves 0.1M
# parameters, fp32 on the CPU. The recipe's data, eval sets and output folder stay out of other runs.
BUILTIN_MODEL_OPTIONS = (
    "learning_rate",
    "max_length",
    "max_prompt_length",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "torch_dtype",
    "use_cpu",
    "dataloader_num_workers",
)


def load_recipe(name_or_path: str) -> dict:
    """The options of a recipe (a YAML path or a packaged name); its keys are checked against the options later."""
    try:
        path = recipe_path(name_or_path)
    except FileNotFoundError as err:
        raise UserError(f"--config: {err}") from None
    if path.is_dir():
        raise UserError(f"--config {name_or_path} is a folder: give a YAML recipe file or a packaged recipe's name")
    try:
        values = yaml.safe_load(path.read_text()) or {}  # safe loader: nothing in a config runs as code
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{where}: not a valid YAML recipe ({problem}); plain option: value lines only") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--config: cannot read {path}: {err}") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: a recipe must be a mapping of option: value, got a {type(values).__name__}")
    return values


def given_options(argv: list[str]) -> set[str]:
    """The option names on the command line (``--name value`` and ``--name=value``)."""
    return {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}


def recipe_defaults(argv: list[str]) -> tuple[dict, str | None]:
    """(the defaults a recipe gives this command line, where they come from) as the module docstring says."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in ("--config", "--model_name_or_path", "--dataset"):
        pre.add_argument(name, default=None)
    known, _ = pre.parse_known_args(argv)
    asks_help = bool({"-h", "--help", "--help-all"} & set(argv))
    if known.config is not None:
        return load_recipe(known.config), f"recipe {recipe_path(known.config)}"
    no_data = known.dataset is None or known.dataset.startswith("builtin:")
    if known.model_name_or_path is None and no_data and not asks_help:  # (help shows the defaults of your runs)
        # once per run, not once per process of a launcher; flushed, so no forked worker inherits it unwritten
        if os.environ.get("RANK", "0") == "0":
            print(f"amapo: no --config, --model_name_or_path or --dataset: running the built-in recipe "
                  f"'{BUILTIN_RECIPE}'", flush=True)  # fmt: skip
        return load_recipe(BUILTIN_RECIPE), f"recipe {BUILTIN_RECIPE}"
    if known.model_name_or_path == BUILTIN_MODEL:
        recipe = load_recipe(BUILTIN_RECIPE)
        return {k: recipe[k] for k in BUILTIN_MODEL_OPTIONS if k in recipe}, f"the defaults of {BUILTIN_MODEL}"
    return {}, None


def one_line_parser(dataclass_type, **kwargs):
    """transformers' ``HfArgumentParser`` whose errors (a value of the wrong type, a missing one) are a ``UserError``
    naming the option, not argparse's usage text and exit: the command line prints them as one line."""
    from transformers import HfArgumentParser  # (no torch: about a second)

    class OneLineParser(HfArgumentParser):
        def error(self, message: str):
            raise UserError(f"{message} (see `{self.prog} --help`)")

    return OneLineParser(dataclass_type, allow_abbrev=False, **kwargs)


def check_recipe_types(values: dict, dataclass_type, source: str | None) -> None:
    """Each recipe value has the type of its option (or a string argparse would convert to it): ``beta: "two"``
    is one line naming the recipe, its line and the key, not argparse's ``argument --beta`` about a flag never
    given."""
    import typing

    hints = typing.get_type_hints(dataclass_type)
    for key, value in values.items():
        kind = basic_type(hints.get(key))
        if kind is None or value is None or fits(value, kind):
            continue
        where = recipe_line(source, key)
        raise UserError(f"{where}: {key}: {value!r} is not {KIND_NAMES[kind]}; write e.g. {key}: {EXAMPLES[kind]}")


KIND_NAMES = {float: "a number", int: "a whole number", bool: "true or false", str: "a string"}
EXAMPLES = {float: "2.5", int: "8", bool: "true", str: "a value"}


def basic_type(annotation):
    """float, int, bool or str for an option typed so (``X | None`` included); None for lists, enums, dicts."""
    import types
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in KIND_NAMES else None


def fits(value, kind) -> bool:
    """Whether argparse would take ``value`` for an option of type ``kind`` (strings are converted as flags are)."""
    if kind is bool:
        return isinstance(value, bool) or str(value).lower() in ("true", "false", "yes", "no", "1", "0")
    if isinstance(value, list | dict):
        return False
    if kind is str:
        return True
    if isinstance(value, bool):
        return False
    try:
        kind(str(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        return False
    return True


def recipe_line(source: str | None, key: str) -> str:
    """ "recipe.yaml:3" for the line that sets ``key`` in the recipe ``source`` ("recipe PATH"), else the source."""
    path = (source or "").removeprefix("recipe ")
    try:
        node = yaml.compose(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return source or "recipe"
    for key_node, _ in getattr(node, "value", []) if isinstance(node, yaml.MappingNode) else []:
        if key_node.value == key:
            return f"{path}:{key_node.start_mark.line + 1}"
    return path


def option_parser(dataclass_type, defaults: dict, **kwargs):
    check_recipe_types(defaults, dataclass_type, kwargs.pop("source", None))
    parser = one_line_parser(dataclass_type, prog="amapo train", **kwargs)
    parser.add_argument("--config", default=None, help=f"YAML recipe: a path or one of {available_recipes()}.")
    parser.add_argument("--help-all", action="store_true", help="List every option, TrainingArguments' included.")
    parser.set_defaults(**defaults)
    return parser


def parse_train_options(argv: list[str], defaults: dict, source: str | None) -> TrainOptions:
    """Pass 1: amapo's own options from the recipe ``defaults`` and the flags, checked; ``--help`` exits here.

    Flags that are not amapo's (TrainingArguments') are left for pass 2.
    """
    own = {f.name for f in fields(TrainOptions)}
    parser = option_parser(
        TrainOptions,
        {k: v for k, v in defaults.items() if k in own},
        description=DESCRIPTION,
        epilog=EPILOG,
        source=source,
    )
    options, *_, remaining = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True, look_for_args_file=False
    )
    check_names_early(remaining, parser)
    if "save_steps" in given_options(argv) and options.save_strategy == "no":
        origin = "--save_strategy no" if "save_strategy" in given_options(argv) else f"save_strategy: no ({source})"
        raise UserError(f"--save_steps {options.save_steps:g} has no effect with {origin}: add --save_strategy steps")
    options.check()
    options.check_method()
    return options


def parse_full(argv: list[str], defaults: dict, source: str | None) -> TrainConfig:
    """Pass 2: every option, TrainingArguments' included, as the ``TrainConfig`` of the run."""
    from amapo.train.config import TrainConfig

    names = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(defaults) - set(names))
    if unknown:
        raise UserError(f"{source}: unknown option(s) {with_hints(unknown, names)} (see `amapo train --help-all`)")
    parser = option_parser(TrainConfig, defaults, description=DESCRIPTION, source=source)
    if "--help-all" in argv:
        parser.print_help()
        sys.exit(0)
    config = parse_all(parser, argv, "amapo train --help-all")
    if "eval_steps" in given_options(argv) and config.eval_strategy == "no":
        raise UserError(
            f"--eval_steps {config.eval_steps:g} has no effect with eval_strategy no: add --eval_strategy steps"
        )
    return config


def check_names_early(remaining: list[str], parser) -> None:
    """An option neither amapo's nor TrainingArguments' is an error now, not after pass 2's slow import."""
    names = training_argument_names()
    if not names:
        return
    spellings = {f"--{prefix}{n}" for n in names for prefix in ("", "no_")}
    spellings |= {s.replace("_", "-") for s in spellings}
    unknown = [arg for arg in remaining if arg.startswith("--") and arg.split("=")[0] not in spellings]
    if unknown:
        known = [option for action in parser._actions for option in action.option_strings] + sorted(spellings)
        raise UserError(f"unknown option(s) {with_hints(unknown, known)}; `amapo train --help-all` lists every option")


def with_hints(unknown: list[str], known: list[str]) -> str:
    """The unknown names, each with the closest known one: "--lerning_rate (did you mean --learning_rate?)"."""
    hints = []
    for arg in unknown:
        close = difflib.get_close_matches(arg.split("=")[0], known, n=1)
        hints.append(f"{arg} (did you mean {close[0]}?)" if close else arg)
    return ", ".join(hints)


def parse_all(parser, argv: list[str], help_command: str):
    """The one dataclass ``parser`` builds from ``argv``; an option it does not know is a one-line error with the
    closest known names (HfArgumentParser raises a bare ValueError)."""
    parsed, *_, remaining = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True, look_for_args_file=False
    )
    unknown = [arg for arg in remaining if arg.startswith("-")] or remaining  # flags; else stray values
    if unknown:
        known = [option for action in parser._actions for option in action.option_strings]
        raise UserError(f"unknown option(s) {with_hints(unknown, known)}; `{help_command}` lists every option")
    return parsed


def parse_train_args(argv: list[str], preflight: Callable[[TrainOptions], None] | None = None) -> TrainConfig:
    """Both passes: the checked ``TrainConfig`` of this command line (``--help``/``--help-all`` exit here).

    ``preflight`` runs between them, on amapo's options (the CLI checks files and dataset rows there).
    """
    defaults, source = recipe_defaults(argv)
    if "--help-all" not in argv:
        options = parse_train_options(argv, defaults, source)
        if preflight is not None:
            preflight(options)
    return parse_full(argv, defaults, source)
