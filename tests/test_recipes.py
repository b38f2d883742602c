"""Every packaged recipe and accelerate config loads and validates, without downloading anything."""

from __future__ import annotations

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig

from amapo.losses import loss_spec
from amapo.recipes import ACCELERATE_DIR, available_recipes
from amapo.train.parsing import load_recipe, parse_train_args

PAPER_SETTINGS = {"llama3-8b-base", "llama3-8b-instruct", "mistral-7b-base", "mistral-7b-instruct"}


def test_paper_recipes_are_all_shipped():
    names = set(available_recipes())
    assert "builtin" in names
    for setting in PAPER_SETTINGS:
        assert {f"{setting}-amapo", f"{setting}-simpo"} <= names


@pytest.mark.parametrize("name", available_recipes())
def test_recipe_parses_into_a_valid_config(name):
    # bf16 is validated against the hardware when the config is built; this machine has no GPU.
    on_cpu = ["--bf16", "false"] if load_recipe(name).get("bf16") else []
    config = parse_train_args(["--config", name, *on_cpu])
    loss_spec(config.method)  # the method exists
    config.build_loss()  # every loss option applies to the method
    assert config.max_prompt_length < config.max_length


@pytest.mark.parametrize("setting,beta,lr", [("llama3-8b-base", 3.0, 6e-7), ("mistral-7b-base", 2.0, 4e-7)])
def test_amapo_recipes_carry_the_released_settings(setting, beta, lr):
    values = load_recipe(f"{setting}-amapo")
    assert (values["method"], values["beta"], values["learning_rate"]) == ("amapo", beta, lr)
    total = values["per_device_train_batch_size"] * values["gradient_accumulation_steps"] * 8
    assert total == 128  # the papers' 128 pairs per step on 8 GPUs


@pytest.mark.parametrize("path", sorted(ACCELERATE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_config_is_valid(path):
    config = ClusterConfig.from_yaml_file(path)
    assert config.num_processes == 8 and config.mixed_precision == "bf16"
    raw = yaml.safe_load(path.read_text())
    assert raw["distributed_type"] in {"MULTI_GPU", "DEEPSPEED", "FSDP"}


def test_accelerate_configs_cover_ddp_zero3_and_fsdp():
    assert {p.stem for p in ACCELERATE_DIR.glob("*.yaml")} == {"ddp", "zero3", "fsdp"}
