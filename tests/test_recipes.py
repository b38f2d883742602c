"""Every packaged recipe and accelerate config loads and validates, without downloading anything."""

from __future__ import annotations

import json
from pathlib import Path

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


# The release's values (github Shiroha-Offical/AMaPO, training_configs/*.yaml, accelerate_configs/deepspeed_zero3.yaml):
# beta, learning rate, pairs per GPU (on 4 GPUs), max length / max prompt length.
RELEASE = {
    "llama3-8b-base": (3.0, 6e-7, 1, 2048, 1800),
    "llama3-8b-instruct": (3.0, 1e-6, 2, 2048, 1800),
    "mistral-7b-base": (2.0, 4e-7, 2, 1024, 512),
    "mistral-7b-instruct": (2.0, 6e-7, 2, 2048, 1800),
}


@pytest.mark.parametrize("setting", sorted(RELEASE))
def test_amapo_recipes_carry_the_released_training(setting):
    beta, lr, per_gpu, max_length, max_prompt_length = RELEASE[setting]
    values = load_recipe(f"{setting}-amapo")
    assert (values["method"], values["beta"], values["learning_rate"]) == ("amapo-released", beta, lr)
    assert (values["max_length"], values["max_prompt_length"]) == (max_length, max_prompt_length)
    assert values["margin_pool_size"] == 4 * per_gpu  # the release pooled one micro-batch of each of its 4 GPUs
    config = parse_train_args(["--config", f"{setting}-amapo", "--bf16", "false"])
    steps = config.per_device_train_batch_size * config.gradient_accumulation_steps * 8
    assert steps == 128  # the papers' 128 pairs per step on 8 GPUs
    assert config.train_sampling_strategy == "random" and config.dataset_shuffle_seed == 42 and config.seed == 42
    assert config.chat_rendering == "handbook" and config.load_dtype() == "float32" and values["bf16"] is True


@pytest.mark.parametrize("setting", sorted(RELEASE))
def test_simpo_recipes_differ_from_amapo_recipes_in_the_loss_only(setting):
    amapo, simpo = load_recipe(f"{setting}-amapo"), load_recipe(f"{setting}-simpo")
    loss_keys = {"method", "beta", "gamma_beta_ratio", "margin_pool_size", "learning_rate", "output_dir",
                 "per_device_train_batch_size", "gradient_accumulation_steps"}  # fmt: skip
    assert {k: v for k, v in amapo.items() if k not in loss_keys} == {
        k: v for k, v in simpo.items() if k not in loss_keys
    }


def test_mistral_instruct_recipes_render_with_the_releases_mistral_template():
    fixture = Path(__file__).parent / "data" / "handbook" / "release_tokens.json"
    template = next(c["chat_template"] for c in json.loads(fixture.read_text())["cases"] if c["template"] == "mistral")
    for method in ("amapo", "simpo"):
        assert load_recipe(f"mistral-7b-instruct-{method}")["chat_template"] == template


@pytest.mark.parametrize("path", sorted(ACCELERATE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_config_is_valid(path):
    config = ClusterConfig.from_yaml_file(path)
    assert config.num_processes == 8 and config.mixed_precision == "bf16"
    raw = yaml.safe_load(path.read_text())
    assert raw["distributed_type"] in {"MULTI_GPU", "DEEPSPEED", "FSDP"}


def test_accelerate_configs_cover_ddp_zero3_and_fsdp():
    assert {p.stem for p in ACCELERATE_DIR.glob("*.yaml")} == {"ddp", "zero3", "fsdp"}
