"""From a YAML recipe and command-line flags of the same names to a ``TrainConfig``."""

from __future__ import annotations

import argparse
from dataclasses import fields

import yaml
from transformers import HfArgumentParser

from amapo.recipes import available_recipes, recipe_path
from amapo.train.config import TrainConfig

DESCRIPTION = """Train a causal LM on preference pairs. A recipe (--config, YAML) sets options; flags of the same
names override it. With neither --config nor --model_name_or_path, the packaged 'builtin' recipe runs: a
complete job on a laptop CPU."""


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
    parser = HfArgumentParser(TrainConfig, prog="amapo train", description=DESCRIPTION)
    parser.add_argument("--config", default=None, help=f"YAML recipe: a path or one of {available_recipes()}.")
    if known.config is not None:
        parser.set_defaults(**load_recipe(known.config))
    elif not any(a.split("=")[0] in ("--model_name_or_path", "-h", "--help") for a in rest):
        print("amapo: no --config or --model_name_or_path: running the built-in default recipe 'builtin'")
        parser.set_defaults(**load_recipe("builtin"))
    config, *_ = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)
    return config
