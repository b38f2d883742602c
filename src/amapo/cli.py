"""The ``amapo`` command line: ``amapo train [--config RECIPE] [--option value ...]``.

A recipe (YAML) sets options; command-line flags of the same names override it. With neither a config nor a
model, ``amapo train`` runs the packaged ``builtin`` recipe, a complete job that runs on a laptop CPU.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

import yaml
from transformers import HfArgumentParser

from amapo.recipes import available_recipes, recipe_path
from amapo.train.config import TrainConfig


def load_recipe(name_or_path: str) -> dict:
    path = recipe_path(name_or_path)
    values = yaml.safe_load(path.read_text()) or {}  # safe loader: nothing in a config runs as code
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of option: value")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {', '.join(unknown)} (see `amapo train --help`)")
    return values


def parse_train_args(argv: list[str]) -> TrainConfig:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(TrainConfig, prog="amapo train", description=__doc__)
    parser.add_argument("--config", default=None, help=f"YAML recipe: a path or one of {available_recipes()}.")
    if known.config is not None:
        parser.set_defaults(**load_recipe(known.config))
    elif not any(a.split("=")[0] in ("--model_name_or_path", "-h", "--help") for a in rest):
        print("amapo: no --config or --model_name_or_path: running the built-in default recipe 'builtin'")
        parser.set_defaults(**load_recipe("builtin"))
    config, *_ = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)
    return config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = argparse.ArgumentParser(prog="amapo", description="Offline preference optimization around AMaPO.")
    top.add_argument("command", choices=["train"], help="train: align a model on preference pairs")
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    command, rest = argv[0], argv[1:]
    if command != "train":
        top.error(f"unknown command {command!r}")
    from amapo.train.run import run_training  # heavy imports only once a command runs

    run_training(parse_train_args(rest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
