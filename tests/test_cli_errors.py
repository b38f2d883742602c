"""Options that cannot work are one line on the command line (exit 2, no traceback), found before any model
loads, and leave nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig

import amapo.train.run
from amapo.builtin import resolve_source
from amapo.cli import main
from amapo.errors import UserError
from amapo.train.config import TrainConfig
from amapo.train.precision import check_trained_weights, check_weight_dtype


def run_cli(capsys, monkeypatch, tmp_path: Path, *args: str) -> str:
    """``amapo train ARGS``: exit 2, one line, no model loaded, nothing written; returns the line."""

    def no_model(*_, **__):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(amapo.train.run, "load_model", no_model)
    out = tmp_path / "out"
    assert main(["train", "--config", "builtin", "--output_dir", str(out), *args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("amapo")]  # (the built-in assets' progress bars)
    assert len(lines) == 1 and lines[0].startswith("amapo train: error: ") and "Traceback" not in err, err
    assert not out.exists()  # nothing written
    return lines[0]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--margin_pool_size", "3"], "--margin_pool_size 3 does not divide the 16 pairs of an optimizer step"),
        (["--margin_pool_size", "4", "--method", "simpo"], "method 'simpo' has none"),
        (["--margin_pool_size", "4", "--margin_stats", "optimizer_step"], "give one of them"),
        (["--chat_rendering", "trl"], "--chat_rendering must be one of amapo, handbook"),
        (["--torch_dtype", "bfloat16"], "--torch_dtype bfloat16 loads bfloat16 weights"),
        (["--torch_dtype", "float16"], "--torch_dtype float16 loads float16 weights"),
        (["--beta", "-1"], "beta must be > 0"),
    ],
)
def test_bad_options_are_one_line(capsys, monkeypatch, tmp_path, args, message):
    assert message in run_cli(capsys, monkeypatch, tmp_path, *args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 is supported here")
def test_transformers_own_option_checks_are_one_line(capsys, monkeypatch, tmp_path):
    """e.g. a paper recipe (bf16) on a machine without bf16 support."""
    assert "bf16" in run_cli(capsys, monkeypatch, tmp_path, "--use_cpu", "false", "--bf16", "true")


def test_low_precision_refusal_names_the_fix(capsys, monkeypatch, tmp_path):
    line = run_cli(capsys, monkeypatch, tmp_path, "--torch_dtype", "bfloat16")
    assert "--torch_dtype float32" in line and "--bf16 true" in line and "--allow_low_precision_weights" in line


@pytest.fixture
def model_without_chat_template(tmp_path) -> Path:
    source = Path(resolve_source("builtin:tiny-llama"))
    folder = tmp_path / "no-template"
    shutil.copytree(source, folder)
    for template in folder.glob("chat_template.*"):
        template.unlink()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).chat_template is None
    return folder


def test_handbook_rendering_without_a_chat_template_is_one_line(
    capsys, monkeypatch, tmp_path, model_without_chat_template
):
    line = run_cli(capsys, monkeypatch, tmp_path, "--model_name_or_path", str(model_without_chat_template),
                   "--chat_rendering", "handbook")  # fmt: skip
    assert "--chat_rendering handbook" in line and "--chat_template" in line


def train_config(**kwargs) -> TrainConfig:
    return TrainConfig(
        output_dir="unused", use_cpu=True, model_name_or_path="builtin:tiny-llama", dataset="builtin:reverse", **kwargs
    )


def test_weights_default_to_float32_for_full_training_and_auto_with_lora():
    assert train_config().load_dtype() == "float32"
    assert train_config(use_peft=True).load_dtype() == "auto"
    assert train_config(torch_dtype="bfloat16", use_peft=True).load_dtype() == "bfloat16"


def test_auto_dtype_is_read_from_the_checkpoint_config():
    bf16 = LlamaConfig(dtype="bfloat16")
    with pytest.raises(UserError, match=r"--torch_dtype auto loads .* bfloat16 weights"):
        check_weight_dtype(train_config(torch_dtype="auto"), bf16)
    check_weight_dtype(train_config(torch_dtype="auto"), LlamaConfig(dtype="float32"))
    for allowed in ({"use_peft": True}, {"allow_low_precision_weights": True}):
        check_weight_dtype(train_config(torch_dtype="bfloat16", **allowed), bf16)


def test_loaded_low_precision_weights_are_refused_unless_frozen_or_allowed():
    path = resolve_source("builtin:tiny-llama")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    assert AutoConfig.from_pretrained(path).dtype in (None, torch.float32, "float32")  # the config did not say
    with pytest.raises(UserError, match="the loaded model holds"):
        check_trained_weights(model, train_config(torch_dtype="auto"))
    check_trained_weights(model, train_config(torch_dtype="auto", allow_low_precision_weights=True))
    model.requires_grad_(False)  # nothing trained in bf16 (LoRA adapters are fp32)
    check_trained_weights(model, train_config(torch_dtype="auto"))
