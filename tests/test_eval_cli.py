"""``amapo eval`` / ``analyze`` / ``compare`` as a user meets them: the run's own eval sets by default, every mistake
one line naming its option before anything heavy runs (and no partial output), whole tables when piped; and what a
run leaves behind: a model card that says what was trained, weights as readable as the files beside them."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from command_line import error_line
from rich.console import Console

import amapo.compare.run as compare_module
import amapo.evaluation.run as eval_module
from amapo.cli import main
from amapo.compare.run import CompareConfig
from amapo.errors import UserError
from amapo.evaluation.analysis import AnalyzeConfig
from amapo.evaluation.run import EvalConfig, print_eval_table
from amapo.train.callbacks import SavedFileModesCallback
from amapo.train.report import CONFIG_FILE, fix_saved_file_modes, print_summary, steps_trained
from amapo.train.results import TrainResult

SETS = ["a=builtin:reverse/in_distribution@train[:8]", "b=builtin:reverse/prompt_ood@train[:8]"]


def copy_run(trained_model: Path, tmp_path: Path, **options) -> Path:
    """A copy of the trained run folder whose amapo_config.yaml has ``options`` changed (None: removed)."""
    run = tmp_path / "run"
    shutil.copytree(trained_model, run)
    config = yaml.safe_load((run / CONFIG_FILE).read_text())
    config.update(options)
    (run / CONFIG_FILE).write_text(yaml.safe_dump(config))
    return run


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if the model is loaded: what the user must fix is found before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error was found")

    monkeypatch.setattr(eval_module, "load_models", refuse)
    monkeypatch.setattr("amapo.evaluation.analysis.load_models", refuse)


# --- the run's own eval sets ------------------------------------------------------------------------------------


def test_eval_of_a_run_folder_defaults_to_its_eval_sets(trained_model, tmp_path, capsys):
    run = copy_run(
        trained_model,
        tmp_path,
        eval_split="train[:8]",
        eval_datasets=["id=builtin:reverse/in_distribution@train[:16]"],
    )
    assert main(["eval", "--model_name_or_path", str(run)]) == 0
    out = capsys.readouterr().out
    announced = [line for line in out.splitlines() if "no --datasets given" in line]
    assert announced == [
        f"amapo eval: no --datasets given: using the eval sets of the run ({run}/{CONFIG_FILE}): "
        "eval=builtin:reverse@train[:8], id=builtin:reverse/in_distribution@train[:16]"
    ]
    results = json.loads((run / "eval" / "eval_results.json").read_text())
    assert {name: r["pairs"] for name, r in results.items()} == {"eval": 8, "id": 16}  # named as training names them
    for header in ("accuracy", "reward_margin/mean", "gradient/overfitting", "gradient/underfitting"):
        assert header in out  # captured stdout is not a terminal: the table is not cut at 80 columns


def test_eval_reuses_the_runs_column_mapping(trained_model, tmp_path, capsys):
    rows = [{"q": "say: ", "good": "abc", "bad": "cba"}] * 4
    data = write_jsonl(tmp_path / "mine.jsonl", rows)
    mapping = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    run = copy_run(trained_model, tmp_path, dataset=str(data), eval_split="train", column_mapping=json.dumps(mapping))
    assert main(["eval", "--model_name_or_path", str(run)]) == 0
    assert f"using the run's column mapping {json.dumps(mapping)}" in capsys.readouterr().out
    assert json.loads((run / "eval" / "eval_results.json").read_text())["eval"]["pairs"] == 4
    # --column_mapping '{}' turns it off: the file's own columns are then not pairs, and the error says why
    assert main(["eval", "--model_name_or_path", str(run), "--column_mapping", "{}"]) == 2
    message = error_line(capsys, "eval")
    assert message.startswith(f"{run}/{CONFIG_FILE} eval={data}@train: ") and "run's column mapping" not in message


def test_eval_without_datasets_or_a_run_config_asks_for_datasets(trained_model, tmp_path, capsys, no_model_loading):
    bare = copy_run(trained_model, tmp_path)
    (bare / CONFIG_FILE).unlink()
    assert main(["eval", "--model_name_or_path", str(bare), "--method", "simpo"]) == 2
    message = error_line(capsys, "eval")
    assert message.startswith("no eval sets: pass --datasets NAME=SOURCE[@SPLIT] ..., e.g. --datasets ")
    assert f"{bare} has no {CONFIG_FILE}" in message
    # a run that had no eval sets (trained with --eval_datasets none) says so
    assert main(["eval", "--model_name_or_path", str(trained_model)]) == 2
    assert "had no eval sets (no eval_split or eval_datasets" in error_line(capsys, "eval")
    assert not (bare / "eval").exists() and not (trained_model / "eval").exists()


# --- every set checked before the model loads; no partial output ---------------------------------------------------


@pytest.mark.parametrize(
    ("third", "reason"),
    [
        ("bad.jsonl", "row 3, field 'chosen': response is empty"),
        ("missing.jsonl", "no such file or folder"),
        ("builtin:reverse@test", 'Unknown split "test"'),
    ],
)
def test_a_bad_third_set_stops_eval_before_any_scoring(
    trained_model, tmp_path, capsys, no_model_loading, third, reason
):
    good = {"prompt": "say: ", "chosen": "abc", "rejected": "cba"}
    write_jsonl(tmp_path / "bad.jsonl", [good] * 3 + [{"prompt": "say: ", "chosen": "", "rejected": "x"}])
    source = str(tmp_path / third) if third.endswith(".jsonl") else third
    out = tmp_path / "eval_out"
    argv = ["eval", "--model_name_or_path", str(trained_model), "--output_dir", str(out), "--datasets", *SETS]
    assert main([*argv, f"c={source}"]) == 2
    message = error_line(capsys, "eval")
    assert message.startswith(f"--datasets c={source.partition('@')[0]}@") and reason in message
    assert not out.exists()  # no eval folder, no eval_results.json


# --- option errors: one line naming the option, before anything loads ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--beta", "nan"], "--beta must be a finite number > 0, got nan"),
        (["--beta", "inf"], "--beta must be a finite number > 0, got inf"),
        (["--beta", "0"], "--beta must be > 0, got 0.0"),
        (["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
        (["--max_generations", "0"], "--max_generations must be >= 1, got 0"),
        (["--max_new_tokens", "-3"], "--max_new_tokens must be >= 1, got -3"),
        (["--temperature", "-0.5"], "--temperature must be >= 0, got -0.5"),
        (["--temperature", "nan"], "--temperature must be a finite number >= 0, got nan"),
        (["--max_length", "0"], "--max_length must be >= 1, got 0"),
        (["--max_length", "32", "--max_prompt_length", "32"], "need --max_prompt_length < --max_length"),
        (["--max_length", "4096"], "--max_length 4096 exceeds the 512 positions of "),
        (["--truncation_mode", "middle"], "--truncation_mode must be one of keep_end, keep_start"),
        (["--column_mapping", "{chosen"], "--column_mapping must be a JSON object such as"),
        (["--method", "dpoo"], "--method: unknown loss 'dpoo'; available: "),
        (["--datasets", "pairs.jsonl"], "--datasets entries must be NAME=SOURCE[@SPLIT] (e.g. "),
        (["--datasets", *SETS, "a=builtin:reverse"], "--datasets names the set 'a' twice"),
        (["--ref_model_name_or_path", "./no/such/base"], "--ref_model_name_or_path: no such file or folder"),
    ],
)
def test_eval_option_errors_name_the_option(trained_model, tmp_path, capsys, no_model_loading, args, expected):
    out = tmp_path / "eval_out"
    argv = ["eval", "--model_name_or_path", str(trained_model), "--output_dir", str(out)]
    if "--datasets" not in args:
        argv += ["--datasets", *SETS]
    assert main([*argv, *args]) == 2
    assert expected in error_line(capsys, "eval")
    assert not out.exists()


def test_eval_model_path_errors(tmp_path, capsys, no_model_loading):
    assert main(["eval", "--model_name_or_path", "./no/such/model", "--datasets", *SETS]) == 2
    assert error_line(capsys, "eval").startswith("--model_name_or_path: no such file or folder ./no/such/model")
    assert main(["eval", "--model_name_or_path", str(tmp_path), "--datasets", *SETS]) == 2
    assert f"--model_name_or_path: {tmp_path} holds no model (no config.json)" in error_line(capsys, "eval")


def test_a_model_without_run_config_needs_method_and_reference(trained_model, tmp_path, capsys, no_model_loading):
    bare = copy_run(trained_model, tmp_path)
    (bare / CONFIG_FILE).unlink()
    assert main(["eval", "--model_name_or_path", str(bare), "--datasets", *SETS]) == 2
    assert "pass --method (e.g. --method simpo)" in error_line(capsys, "eval")
    assert main(["eval", "--model_name_or_path", str(bare), "--datasets", *SETS, "--method", "dpo"]) == 2
    message = error_line(capsys, "eval")
    assert message.startswith("method 'dpo' scores against a reference model") and "--ref_model_name_or_path" in message


def test_configs_raise_user_errors_from_python_too():
    with pytest.raises(UserError, match=r"^--beta must be a finite number > 0, got inf$"):
        EvalConfig("m", beta=float("inf"))
    with pytest.raises(UserError, match=r"^--methods: unknown loss 'nope'"):
        AnalyzeConfig("m", "pairs.jsonl", methods=["dpo", "nope"])
    with pytest.raises(UserError, match=r"^--methods needs at least one value"):
        CompareConfig(methods=[])
    with pytest.raises(UserError, match=r"^--beta_sweep must be a finite number > 0, got nan$"):
        CompareConfig(beta_sweep=[1.0, float("nan")])
    with pytest.raises(UserError, match=r"^--max_steps must be -1 \(the recipe's budget\) or >= 1, got 0$"):
        CompareConfig(max_steps=0)


def test_analyze_checks_its_set_before_loading_the_model(trained_model, tmp_path, capsys, no_model_loading):
    out = tmp_path / "analysis"
    argv = ["analyze", "--model_name_or_path", str(trained_model), "--output_dir", str(out), "--dataset"]
    assert main([*argv, str(tmp_path / "missing.jsonl")]) == 2
    assert error_line(capsys, "analyze").startswith(f"--dataset pairs={tmp_path / 'missing.jsonl'}@train: no such file")
    assert main([*argv, "builtin:reverse/in_distribution", "--methods", "dpo", "dpo"]) == 2
    assert error_line(capsys, "analyze") == "--methods lists dpo twice: give each method once"
    assert main([*argv, "builtin:reverse/in_distribution", "--max_prompt_length", "64"]) == 2
    assert error_line(capsys, "analyze").startswith("need --max_prompt_length < --max_length")
    assert not out.exists()


def test_compare_checks_every_run_before_the_first_trains(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a run was trained before the error was found")

    monkeypatch.setattr(compare_module, "run_training", refuse)
    out = tmp_path / "report"
    argv = ["compare", "--methods", "simpo", "amapo", "--seeds", "1", "--output_dir", str(out)]
    assert main([*argv, "--analysis_set", "held_out"]) == 2
    assert error_line(capsys, "compare").startswith(
        "--analysis_set held_out is not an eval set of the recipe builtin (its eval_datasets: in_distribution, "
    )
    assert main([*argv, "--generation_sets", "in_distribution", "nope"]) == 2
    assert error_line(capsys, "compare").startswith("--generation_sets nope is not an eval set of the recipe")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: builtin:tiny-llama\ndataset: ./nowhere/pairs.jsonl\n")
    assert main([*argv, "--recipe", str(recipe)]) == 2
    assert error_line(capsys, "compare") == (
        f"--recipe {recipe}: --dataset: no such file or folder ./nowhere/pairs.jsonl "
        f"(looked in {Path('./nowhere/pairs.jsonl').absolute()})"
    )
    assert main([*argv, "--seeds", "2", "2"]) == 2
    assert error_line(capsys, "compare") == "--seeds lists 2 twice: give each once"
    assert not out.exists()


# --- tables piped into a file are whole --------------------------------------------------------------------------


def piped_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=80), buffer  # what rich gives a pipe: not a terminal, 80 columns


def test_eval_table_is_not_cut_when_piped():
    console, buffer = piped_console()
    metrics = {"accuracy": 0.5, "reward_margin/mean": 1.0, "gradient/overfitting": 0.3, "gradient/underfitting": 0.1}
    metrics |= {"generation/true_reward": 0.4, "generation/length": 7.0}
    print_eval_table({"response_ood_long_name": metrics}, console)
    text = buffer.getvalue()
    assert not console.is_terminal and max(len(line) for line in text.splitlines()) > 80
    for header in [*metrics, "response_ood_long_name"]:
        assert header in text
    assert "…" not in text
    assert console.width == 80  # widened for the table only


def test_train_summary_is_not_cut_when_piped():
    console, buffer = piped_console()
    config = SimpleNamespace(method="amapo-no-zero-margin", dataset="/data/preference/ultrafeedback_binarized.jsonl")
    metrics = {"train_loss": 0.6931, "train_runtime": 12.5, "train_samples_per_second": 40.2}
    evals = {"eval_mutual_out_of_distribution_rewards/accuracies": 0.75}
    before = {"eval_mutual_out_of_distribution_rewards/accuracies": 0.5}
    result = TrainResult(Path("/runs/a/long/output/folder/amapo-no-zero-margin-seed1"), metrics, before, evals)
    print_summary(config, result, console)
    text = buffer.getvalue()
    for whole in (f"amapo train: {config.method} on {config.dataset}", str(result.output_dir),
                  "Held-out ranking accuracy (chosen scored above rejected)", "mutual_out_of_distribution",
                  "train_samples_per_second"):  # fmt: skip
        assert whole in text
    assert "…" not in text


# --- the model card says what was trained --------------------------------------------------------------------------


def test_model_card_reports_steps_and_epochs_trained_not_the_configured_epochs(trained_model):
    card = (trained_model / "README.md").read_text()
    epoch = json.loads((trained_model / "results.json").read_text())["train"]["epoch"]
    assert 0 < epoch < 1  # the built-in recipe asks for 4 epochs; 4 steps cover a fraction of one
    assert f"- Trained: 4 optimizer steps, {epoch:.3g} epochs of the training pairs (max_steps 4)" in card
    assert "4 epoch(s)" not in card and "4.0 epoch" not in card
    assert "cosine schedule" in card  # the schedule's name, not SchedulerType.COSINE


def test_steps_trained_prefers_the_trainers_global_step(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 9, "train_runtime": 1.0}) + "\n")
    result = SimpleNamespace(output_dir=tmp_path, train_metrics={"global_step": 12, "epoch": 0.5})
    assert steps_trained(result) == 12
    result.train_metrics = {"epoch": 0.5}
    assert steps_trained(result) == 9  # the final training log in metrics.jsonl
    assert steps_trained(SimpleNamespace(output_dir=tmp_path / "none", train_metrics={})) is None


# --- saved weights are as readable as the files beside them ------------------------------------------------------


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_saved_weights_get_the_umask_mode(tmp_path, umask_027):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    weights, beside = tmp_path / "model.safetensors", tmp_path / "config.json"
    changed = fix_saved_file_modes(tmp_path)
    assert mode(weights) == mode(beside) == umask_027  # safetensors >= 0.8 writes 0o600 (a renamed temp file)
    assert changed == [weights] and fix_saved_file_modes(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_checkpoint_weights_get_the_umask_mode(tmp_path, umask_027):
    from safetensors.torch import save_file
    from torch import zeros

    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    save_file({"w": zeros(2)}, checkpoint / "model.safetensors")
    state = SimpleNamespace(global_step=3, is_world_process_zero=True)
    SavedFileModesCallback().on_save(SimpleNamespace(output_dir=str(tmp_path)), state, None)
    assert mode(checkpoint / "model.safetensors") == umask_027
