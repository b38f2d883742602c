"""``amapo train`` end to end on CPU: the built-in default, foreign and conversational data, LoRA, resume,
gradient accumulation, and every loss method for a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from transformers.trainer_pt_utils import LengthGroupedSampler

from amapo.builtin import resolve_source
from amapo.cli import main
from amapo.losses import available_losses
from amapo.model.loading import load_tokenizer
from amapo.train.parsing import parse_train_args
from amapo.train.run import prepare_split, run_training

BUILTIN_MODEL_AND_DATA = "model_name_or_path: builtin:tiny-llama\ndataset: builtin:reverse\n"


def train(tmp_path: Path, *args: str):
    """Run ``amapo train`` (parsed exactly as on the command line) into tmp_path/out."""
    config = parse_train_args(["--config", "builtin", "--output_dir", str(tmp_path / "out"), *args])
    return run_training(config)


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "model.safetensors")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The built-in default job, as `amapo train` with no arguments runs it (output folder redirected)."""
    out = tmp_path_factory.mktemp("default") / "out"
    config = parse_train_args(["--output_dir", str(out)])
    return run_training(config)


def test_default_run_improves_held_out_ranking_accuracy(default_run):
    key = "eval_in_distribution_rewards/accuracies"
    before, after = default_run.eval_before[key], default_run.eval_after[key]
    assert after > before + 0.03, (before, after)
    for name in ("prompt_ood", "response_ood", "mutual_ood"):
        assert f"eval_{name}_rewards/accuracies" in default_run.eval_after


def test_default_run_writes_a_loadable_model_and_its_records(default_run):
    out = default_run.output_dir
    for name in ("model.safetensors", "config.json", "tokenizer.json", "amapo_config.yaml", "README.md"):
        assert (out / name).exists(), name
    mode = lambda name: (out / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("model.safetensors") == mode("config.json")  # readable as the other files (safetensors wrote 0600)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama"
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_logs = [log for log in logs if "loss" in log]
    assert train_logs, "no training log written"
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "length/chosen",
        "batch/mu",
        "batch/sigma",
        "margin/mean",
        "margin/max",
        "margin/zero_fraction",
    ):
        assert key in train_logs[-1], key
    assert any("grad_weight/correct" in log for log in train_logs)
    results = json.loads((out / "results.json").read_text())
    assert results["eval_after"]["eval_in_distribution_rewards/accuracies"] == pytest.approx(
        default_run.eval_after["eval_in_distribution_rewards/accuracies"]
    )
    card = (out / "README.md").read_text()
    assert "amapo" in card and "in_distribution" in card


def test_cli_without_arguments_runs_the_builtin_recipe(monkeypatch, tmp_path):
    config = parse_train_args([])
    assert config.model_name_or_path == "builtin:tiny-llama" and config.method == "amapo"
    assert config.learning_rate == 1e-3  # from the builtin recipe, not the dataclass default


def test_yaml_values_are_overridden_by_flags_of_the_same_name(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"{BUILTIN_MODEL_AND_DATA}method: simpo\nbeta: 2.5\ngamma_beta_ratio: 0.4\nlearning_rate: 1.0e-5\n"
    )
    config = parse_train_args(["--config", str(recipe), "--beta", "3.0"])
    assert (config.method, config.beta, config.gamma_beta_ratio, config.learning_rate) == ("simpo", 3.0, 0.4, 1e-5)


def test_unknown_recipe_option_is_a_clear_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"{BUILTIN_MODEL_AND_DATA}method: simpo\nbetta: 2.5\n")
    with pytest.raises(ValueError, match=r"unknown option\(s\) betta \(did you mean beta\?\)"):
        parse_train_args(["--config", str(recipe)])


def test_option_that_does_not_apply_to_the_method_is_rejected():
    with pytest.raises(ValueError, match="--focal_gamma does not apply to method 'simpo'"):
        parse_train_args(["--config", "builtin", "--method", "simpo", "--focal_gamma", "0.1"])


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--method", "--beta", "--margin_stats", "--use_peft", "--max_length", "--learning_rate", "--config"):
        assert option in text, option
    assert "default: amapo" in text or "(default: amapo)" in text


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def builtin_rows(n: int) -> list[dict]:
    lines = Path(resolve_source("builtin:reverse")).read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


SHORT = (
    "--max_steps",
    "3",
    "--per_device_train_batch_size",
    "4",
    "--eval_datasets",
    "held=builtin:reverse/in_distribution@train[:16]",
)


@pytest.mark.parametrize("method", available_losses())
def test_every_method_trains_a_few_steps(tmp_path, method):
    rows = builtin_rows(32)
    for row in rows:  # ODPO's offset: the true-reward gap, positive by construction
        row["offset"] = row["chosen_reward"] - row["rejected_reward"]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = train(tmp_path, "--dataset", str(data), "--method", method, *SHORT[:4], "--eval_datasets", f"held={data}")
    assert torch.isfinite(torch.tensor(result.train_metrics["train_loss"]))
    before = AutoModelForCausalLM.from_pretrained(resolve_source("builtin:tiny-llama")).state_dict()
    after = final_weights(result.output_dir)
    assert any(not torch.equal(before[k], after[k]) for k in after), "weights did not change"


def test_conversational_dataset_with_chat_template(tmp_path):
    rows = [
        {
            "prompt": [{"role": "system", "content": "Reverse words."}, {"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in builtin_rows(24)
    ]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    result = train(tmp_path, "--dataset", str(data), "--max_length", "96", "--max_prompt_length", "80", *SHORT[:4])
    assert result.train_metrics["train_loss"] > 0


def test_orca_file_in_openai_schema_trains(tmp_path, orca_file):
    result = train(
        tmp_path,
        "--dataset",
        str(orca_file),
        "--train_split",
        "train[:16]",
        "--max_length",
        "384",
        "--max_prompt_length",
        "256",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
    )
    assert torch.isfinite(torch.tensor(result.train_metrics["train_loss"]))


def test_lora_trains_adapters_and_the_output_loads(tmp_path):
    result = train(
        tmp_path,
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--method",
        "dpo",
        "--learning_rate",
        "1e-2",
        *SHORT,
    )
    out = result.output_dir
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(out)  # transformers resolves the base model and the adapter
    base = AutoModelForCausalLM.from_pretrained(resolve_source("builtin:tiny-llama"))
    ids = torch.tensor([[257, 100, 101, 102]])
    assert not torch.allclose(model(ids).logits, base(ids).logits)


def test_resume_from_checkpoint_continues_to_the_same_weights(tmp_path):
    common = (
        "--max_steps",
        "6",
        "--per_device_train_batch_size",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "3",
        "--save_total_limit",
        "3",
        "--method",
        "alpha-dpo",
        "--eval_datasets",
        "none",
    )
    full = train(tmp_path / "full", *common)
    checkpoint = full.output_dir / "checkpoint-3"  # the state of the same run, stopped after step 3
    assert (checkpoint / "loss_state.pt").exists()  # alpha-DPO's running statistics travel with it
    resumed = train(tmp_path / "resumed", *common, "--resume_from_checkpoint", str(checkpoint))
    a, b = final_weights(full.output_dir), final_weights(resumed.output_dir)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    """8 pairs x 1 step == 2 pairs x 4 accumulation steps (SimPO: no batch statistics)."""
    args = (
        "--method",
        "simpo",
        "--max_steps",
        "1",
        "--learning_rate",
        "1e-2",
        "--warmup_ratio",
        "0",
        "--eval_datasets",
        "none",
        "--seed",
        "7",
        "--optim",
        "sgd",
        "--max_grad_norm",
        "0",
    )
    # SGD and no clipping: Adam's normalization or gradient clipping would hide a wrongly scaled gradient.
    big = train(tmp_path / "big", *args, "--per_device_train_batch_size", "8")
    accumulated = train(
        tmp_path / "acc", *args, "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "4"
    )
    a, b = final_weights(big.output_dir), final_weights(accumulated.output_dir)
    base = AutoModelForCausalLM.from_pretrained(resolve_source("builtin:tiny-llama")).state_dict()
    moved = max((a[k] - base[k]).abs().max().item() for k in a)
    assert moved > 1e-4  # the step did something
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_reference_free_methods_never_load_a_reference_model(tmp_path, monkeypatch):
    import amapo.train.run as run

    loaded = []
    original = run.load_model
    monkeypatch.setattr(run, "load_model", lambda path, **options: loaded.append(path) or original(path, **options))
    train(tmp_path / "simpo", "--method", "simpo", *SHORT)
    assert len(loaded) == 1  # the policy only
    train(tmp_path / "dpo", "--method", "dpo", *SHORT)
    assert len(loaded) == 3  # policy + frozen reference


def test_precomputed_reference_logps_give_the_same_training(tmp_path):
    live = train(tmp_path / "live", "--method", "dpo", "--learning_rate", "1e-2", *SHORT)
    pre = train(
        tmp_path / "pre", "--method", "dpo", "--learning_rate", "1e-2", "--precompute_ref_logps", "true", *SHORT
    )
    a, b = final_weights(live.output_dir), final_weights(pre.output_dir)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_tensorboard_logging_and_activation_checkpointing(tmp_path):
    result = train(
        tmp_path, "--report_to", "tensorboard", "--activation_checkpointing", "true", "--logging_steps", "1", *SHORT
    )
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    assert torch.isfinite(torch.tensor(result.train_metrics["train_loss"]))


def test_every_batch_layout_trains_to_the_same_weights(tmp_path):
    """shared_prompt (the default here) and packed are speed-ups only: padded rows give the same training."""
    args = ("--method", "amapo", "--learning_rate", "1e-2", "--optim", "sgd", "--max_grad_norm", "0", *SHORT)
    runs = {layout: train(tmp_path / layout, *args, "--batch_layout", layout) for layout in ("padded", "shared_prompt")}
    runs["packed"] = train(tmp_path / "packed", *args, "--batch_layout", "packed")
    weights = {layout: final_weights(run.output_dir) for layout, run in runs.items()}
    base = AutoModelForCausalLM.from_pretrained(resolve_source("builtin:tiny-llama")).state_dict()
    assert max((value - base[k]).abs().max().item() for k, value in weights["padded"].items()) > 1e-4
    for layout in ("shared_prompt", "packed"):
        for key, value in weights["padded"].items():
            torch.testing.assert_close(weights[layout][key], value, rtol=1e-4, atol=1e-6, msg=f"{layout} {key}")


def test_training_batches_are_grouped_by_length_of_their_rows(tmp_path, monkeypatch):
    import transformers.trainer

    recorded = []

    class Recording(LengthGroupedSampler):
        def __init__(self, *args, lengths=None, **kwargs):
            recorded.append(list(lengths))
            super().__init__(*args, lengths=lengths, **kwargs)

    monkeypatch.setattr(transformers.trainer, "LengthGroupedSampler", Recording)
    assert parse_train_args(["--config", "builtin"]).train_sampling_strategy == "random"  # the default, as TRL's
    config = parse_train_args(
        ["--config", "builtin", "--output_dir", str(tmp_path / "out"), "--train_sampling_strategy", "group_by_length",
         *SHORT]
    )  # fmt: skip
    assert config.batch_layout == "auto"
    run_training(config)
    tokenizer = load_tokenizer(resolve_source(config.model_name_or_path))
    pairs = prepare_split(config.dataset, config.train_split, tokenizer, config, needs_offsets=False)
    rows = zip(*(pairs[f"{k}_input_ids"] for k in ("prompt", "chosen", "rejected")), strict=True)
    train_lengths = [lengths for lengths in recorded if len(lengths) == len(pairs)]
    assert train_lengths == [[len(p) + len(c) + len(r) for p, c, r in rows]]  # shared_prompt rows: P + C + R


def test_pairs_are_drawn_in_the_releases_order(tmp_path, monkeypatch):
    """--dataset_shuffle_seed 42 with the default random sampler and seed 42 draws the pairs in the order AMaPO's
    release drew them: datasets' Dataset.shuffle(seed=42) (alignment-handbook's loader), then torch.randperm with
    a generator seeded 42 (accelerate's SeedableRandomSampler, which the Trainer uses)."""
    import numpy as np

    from amapo.data import load_preference_dataset
    from amapo.train.trainer import PreferenceTrainer

    drawn = []
    compute_loss = PreferenceTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        if model.training:
            drawn.extend(inputs["row_index"].tolist())
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(PreferenceTrainer, "compute_loss", recording)
    train(tmp_path, "--dataset_shuffle_seed", "42", "--max_steps", "3", "--per_device_train_batch_size", "4",
          "--eval_datasets", "none", "--logging_steps", "1")  # fmt: skip
    rows = len(load_preference_dataset(resolve_source("builtin:reverse"), split="train"))
    handbook_order = np.random.default_rng(42).permutation(rows)
    sampler_order = torch.randperm(rows, generator=torch.Generator().manual_seed(42))
    assert drawn == [int(handbook_order[i]) for i in sampler_order[:12]]
