"""What every command checks before it loads a model: that the model's weights are whole (a truncated download is
one line naming the file, not a ``SafetensorError`` traceback), that its output folder can be written, and that it
replaces no earlier results unasked; and the built-in model, which brings its own options to every command."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from command_line import error_line

from amapo.builtin import resolve_source
from amapo.cli import main
from amapo.errors import UserError
from amapo.model.loading import check_weights, load_model, load_model_config
from amapo.output_folder import check_writable_folder
from amapo.recipes import recipe_path

FIX = "download the model again, or save it again (model.save_pretrained(folder))"
SET = "a=builtin:reverse/in_distribution@train[:8]"
QUESTIONS = [{"dataset": "h", "instruction": f"reverse: {w} =", "output": w[::-1], "generator": "x"} for w in "ab"]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if any command loads a causal LM: what the user must fix is found before."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error was found")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.fixture
def model_copy(tmp_path) -> Path:
    """A copy of the built-in tiny model, to break."""
    folder = tmp_path / "model"
    shutil.copytree(resolve_source("builtin:tiny-llama"), folder)
    return folder


@pytest.fixture
def truncated(model_copy) -> Path:
    """The copy with its last 100 bytes gone, as a download cut short leaves it."""
    weights = model_copy / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 100)
    return model_copy


def questions_file(tmp_path: Path) -> Path:
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(QUESTIONS))
    return path


# --- weights: headers read, no tensor data ------------------------------------------------------------------------


def test_whole_weights_pass(model_copy):
    check_weights(str(model_copy))
    check_weights("some-org/some-hub-model")  # not a local folder: left to loading


def test_a_truncated_file_is_named_with_its_size_and_the_fix(truncated):
    weights = truncated / "model.safetensors"
    with pytest.raises(UserError) as caught:
        check_weights(str(truncated), named="--model_name_or_path m")
    message = str(caught.value)
    assert message.startswith(f"--model_name_or_path m: {weights}: truncated: its header describes ")
    assert message.endswith(f"the file holds {weights.stat().st_size - 8 - header_length(weights)}: {FIX}")
    assert "\n" not in message
    with pytest.raises(UserError, match="truncated"):  # train reads the model's config here, before tokenizing
        load_model_config(str(truncated))


def header_length(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (os.urandom(4096), "truncated or not a safetensors file: its first 8 bytes give a header of "),
        ((6).to_bytes(8, "little") + b"{oops}" + b"\0" * 64, "its header is not JSON, so not a safetensors file"),
        (b"abc", "3 bytes, too short for a safetensors file"),
        ((2).to_bytes(8, "little") + b"[]", "its header does not describe tensors (no data_offsets)"),
    ],
)
def test_a_garbage_file_is_named(model_copy, content, problem):
    (model_copy / "model.safetensors").write_bytes(content)
    with pytest.raises(UserError, match="^" + str(model_copy / "model.safetensors") + ": ") as caught:
        check_weights(str(model_copy))
    assert problem in str(caught.value)


def test_bytes_past_what_the_header_describes_are_refused_too(model_copy):
    with (model_copy / "model.safetensors").open("ab") as f:
        f.write(b"\0" * 10)
    with pytest.raises(UserError, match="10 bytes more than its header describes"):
        check_weights(str(model_copy))


@pytest.fixture
def sharded(model_copy, tmp_path) -> Path:
    """The tiny model saved in shards with their index, as large models are."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(model_copy).save_pretrained(folder, max_shard_size="200KB")
    return folder


def test_every_shard_of_an_index_is_checked(sharded):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    check_weights(str(sharded))
    last = sharded / shards[-1]
    os.truncate(last, last.stat().st_size - 1)
    with pytest.raises(UserError, match=f"^{last}: truncated: "):
        check_weights(str(sharded))
    last.unlink()
    with pytest.raises(UserError) as caught:
        check_weights(str(sharded))
    assert str(caught.value) == (
        f"{sharded / 'model.safetensors.index.json'} lists the shard {shards[-1]}, which is not in {sharded} "
        f"(a download cut short?): {FIX}"
    )


def test_an_adapters_weights_and_its_local_base_are_checked(truncated, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(truncated)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"abc")
    with pytest.raises(UserError, match=f"^{adapter / 'adapter_model.safetensors'}: 3 bytes"):
        check_weights(str(adapter))
    shutil.copy(resolve_source("builtin:tiny-llama") + "/model.safetensors", adapter / "adapter_model.safetensors")
    with pytest.raises(UserError, match=f"^the base model {truncated} of the adapter {adapter}: .* truncated"):
        check_weights(str(adapter))


def test_loading_turns_a_safetensors_error_into_one_line(truncated):
    """The last resort, for a file the check could not see first (a Hub download): no traceback either."""
    with pytest.raises(UserError) as caught:
        load_model(str(truncated))
    assert str(caught.value).startswith(f"{truncated}: cannot read its weights (Error while deserializing header")
    assert str(caught.value).endswith(FIX)


def test_train_refuses_truncated_weights_before_anything_loads(truncated, tmp_path, capsys, no_model_loading):
    run = tmp_path / "run"
    argv = ["train", "--model_name_or_path", str(truncated), "--dataset", "builtin:reverse", "--output_dir", str(run)]
    assert main(argv) == 2
    message = error_line(capsys, "train")
    assert message.startswith(f"--model_name_or_path {truncated}: {truncated / 'model.safetensors'}: truncated: ")
    assert not run.exists()
    base = ["train", "--config", "builtin", "--output_dir", str(run), "--ref_model_name_or_path"]
    assert main([*base, str(truncated), "--method", "dpo"]) == 2  # the reference too
    assert error_line(capsys, "train").startswith(f"--ref_model_name_or_path {truncated}: ")


@pytest.mark.parametrize("command", ["eval", "analyze", "generate", "make-pairs"])
def test_every_command_refuses_truncated_weights_before_loading(command, truncated, tmp_path, capsys, no_model_loading):
    model = ["--model_name_or_path", str(truncated)]
    limits = ["--max_length", "64", "--max_prompt_length", "32"]  # the tiny model's 512 positions
    argv = {
        "eval": [*model, *limits, "--method", "simpo", "--datasets", SET, "--output_dir", str(tmp_path / "out")],
        "analyze": [*model, *limits, "--methods", "simpo", "--dataset", SET, "--output_dir", str(tmp_path / "out")],
        "generate": [*model, "--questions", str(questions_file(tmp_path)), "--output", str(tmp_path / "out/a.json")],
        "make-pairs": [*model, "--prompts", "builtin:reverse/in_distribution", "--prompts_split", "train[:4]",
                       "--reward", "builtin:reverse", "--output", str(tmp_path / "out/pairs.jsonl")],
    }[command]  # fmt: skip
    assert main([command, *argv]) == 2
    message = error_line(capsys, command)
    assert message.startswith(f"--model_name_or_path {truncated}: {truncated / 'model.safetensors'}: truncated: ")
    assert not (tmp_path / "out").exists()


def test_eval_names_a_truncated_reference(truncated, capsys, tmp_path, no_model_loading):
    argv = ["eval", "--model_name_or_path", "builtin:tiny-llama", "--method", "dpo", "--datasets", SET]
    assert main([*argv, "--ref_model_name_or_path", str(truncated), "--output_dir", str(tmp_path / "out")]) == 2
    assert error_line(capsys, "eval").startswith(f"the reference model {truncated}: {truncated}/model.safetensors: ")


def test_compare_refuses_a_recipe_whose_model_is_truncated(truncated, tmp_path, capsys, no_model_loading):
    recipe = yaml.safe_load(recipe_path("builtin").read_text()) | {"model_name_or_path": str(truncated)}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    argv = ["compare", "--recipe", str(tmp_path / "recipe.yaml"), "--output_dir", str(tmp_path / "report")]
    assert main(argv) == 2
    message = error_line(capsys, "compare")
    assert f"model_name_or_path {truncated}: {truncated}/model.safetensors: truncated: " in message


# --- the output folder: writable, not made ------------------------------------------------------------------------


def test_a_writable_folder_passes_and_is_not_made(tmp_path):
    check_writable_folder(tmp_path / "new" / "deeper", "--output_dir")
    check_writable_folder(tmp_path, "--output_dir")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the probe is left


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(UserError) as caught:
        check_writable_folder(a_file / "run", "--output_dir")
    assert str(caught.value) == (
        f"--output_dir {a_file / 'run'}: {a_file} is a file, so no folder can be made under it: choose another "
        "--output_dir (the file is left as it is)"
    )
    with pytest.raises(UserError, match=f"^--output_dir {a_file}: a file, not a folder"):
        check_writable_folder(a_file, "--output_dir")
    with pytest.raises(UserError) as caught:  # /proc takes no folder, whatever its permission bits say
        check_writable_folder("/proc/amapo-run", "--output_dir")
    assert str(caught.value) == (
        "--output_dir /proc/amapo-run: cannot be created: /proc, the nearest folder that exists, takes no new folder "
        "(No such file or directory): choose an --output_dir in a folder you can write to"
    )
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("command", ["train", "eval", "analyze", "generate", "make-pairs", "compare"])
def test_every_command_refuses_an_unwritable_output_before_loading(command, tmp_path, capsys, no_model_loading):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    out = str(a_file / "out")
    model = ["--model_name_or_path", "builtin:tiny-llama"]
    argv = {
        "train": [*model, "--dataset", "builtin:reverse", "--output_dir", out],
        "eval": [*model, "--datasets", SET, "--output_dir", out],
        "analyze": [*model, "--dataset", SET, "--output_dir", out],
        "generate": [*model, "--questions", str(questions_file(tmp_path)), "--output", f"{out}/answers.json"],
        "make-pairs": [*model, "--prompts", "builtin:reverse/in_distribution", "--reward", "builtin:reverse",
                       "--output", f"{out}/pairs.jsonl"],
        "compare": ["--output_dir", out],
    }[command]  # fmt: skip
    assert main([command, *argv]) == 2
    option = "--output" if command in ("generate", "make-pairs") else "--output_dir"
    message = error_line(capsys, command)
    assert message.startswith(f"{option} {out}") and f"{a_file} is a file, so no folder can be made under it" in message


# --- results are never replaced silently ------------------------------------------------------------------------


def test_eval_refuses_a_folder_with_results_unless_told_to_overwrite(tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    argv = ["eval", "--model_name_or_path", "builtin:tiny-llama", "--datasets", SET, "--output_dir", str(out)]
    assert main(argv) == 0
    first = (out / "eval_results.json").read_text()
    (out / "scores_old.jsonl").write_text("{}\n")  # the scores of a set this run does not score
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()

    import amapo.evaluation.run as eval_module

    loads = []
    real = eval_module.load_models
    monkeypatch.setattr(eval_module, "load_models", lambda *a, **k: loads.append(1) or real(*a, **k))
    assert main(argv) == 2
    assert error_line(capsys, "eval") == (
        f"--output_dir {out} already holds the results of an earlier `amapo eval` (eval_results.json, "
        "reward_margins.png, scores_old.jsonl): choose another --output_dir, or pass --overwrite_output_dir true to "
        "replace them"
    )
    assert loads == [] and (out / "eval_results.json").read_text() == first
    assert main([*argv, "--overwrite_output_dir", "true"]) == 0
    assert loads == [1] and not (out / "scores_old.jsonl").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "eval_results.json").read_text()) == json.loads(first)


def test_analyze_refuses_a_folder_with_results_unless_told_to_overwrite(tmp_path, capsys, no_model_loading):
    out = tmp_path / "analysis"
    out.mkdir()
    (out / "analysis.json").write_text("{}")
    argv = ["analyze", "--model_name_or_path", "builtin:tiny-llama", "--dataset", SET, "--output_dir", str(out)]
    assert main(argv) == 2
    assert error_line(capsys, "analyze").startswith(
        f"--output_dir {out} already holds the results of an earlier `amapo analyze` (analysis.json): "
    )
    with pytest.raises(AssertionError, match="a model was loaded"):  # past the check, to the model
        main([*argv, "--overwrite_output_dir", "true"])


def test_compare_refuses_a_folder_with_a_report_unless_told_to_overwrite(tmp_path, capsys, monkeypatch):
    import amapo.compare.run

    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("# amapo compare\n")
    argv = ["compare", "--methods", "amapo", "--seeds", "1", "--output_dir", str(out)]
    assert main(argv) == 2
    assert error_line(capsys, "compare") == (
        f"--output_dir {out} already holds the results of an earlier `amapo compare` (report.md): choose another "
        "--output_dir, or pass --overwrite_output_dir true to replace them"
    )
    monkeypatch.setattr(amapo.compare.run, "shared_inputs", lambda *_: pytest.fail("past the check"))
    with pytest.raises(pytest.fail.Exception, match="past the check"):
        main([*argv, "--overwrite_output_dir", "true"])


# --- the built-in model brings its options to every command --------------------------------------------------------


def test_eval_and_analyze_run_with_only_the_builtin_model(tmp_path, capsys):
    assert main(["eval", "--model_name_or_path", "builtin:tiny-llama", "--output_dir", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "no --datasets given: using the eval sets of the built-in model (recipe builtin): in_distribution=" in out
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert set(results) == {"in_distribution", "prompt_ood", "response_ood", "mutual_ood"}
    assert all(r["pairs"] == 256 for r in results.values())
    assert main(["analyze", "--model_name_or_path", "builtin:tiny-llama", "--output_dir", str(tmp_path / "an")]) == 0
    analysis = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert analysis["dataset"] == "in_distribution=builtin:reverse/in_distribution@train[:256]"


def test_the_builtin_models_options_yield_to_given_ones():
    from amapo.evaluation.run import loss_for_model, trained_config
    from amapo.evaluation.sets import token_limits

    trained = trained_config("builtin:tiny-llama")
    assert token_limits(trained)["max_length"] == 64 and token_limits(trained)["max_prompt_length"] == 32
    assert token_limits(trained, max_length=48)["max_length"] == 48
    assert type(loss_for_model(None, trained)).__name__ == "AMaPOLoss" and loss_for_model(None, trained).beta == 2.0
    assert type(loss_for_model("simpo", trained)).__name__ == "SimPOLoss"
    from amapo.evaluation.options import AnalyzeConfig

    assert AnalyzeConfig("builtin:tiny-llama", "b=builtin:reverse/mutual_ood").dataset.startswith("b=")
    with pytest.raises(UserError, match="required: --dataset"):  # another model names its pairs
        AnalyzeConfig("./my-model")


def test_generate_with_the_builtin_model_answers_within_its_recipes_limits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the built-in model's answers go to ./eval, not into amapo's cache
    questions = questions_file(tmp_path)
    assert main(["generate", "--model_name_or_path", "builtin:tiny-llama", "--questions", str(questions)]) == 0
    answers = tmp_path / "eval" / "alpaca-eval" / "model_outputs.json"
    settings = json.loads(answers.with_name(answers.name + ".settings.json").read_text())
    assert settings["max_new_tokens"] == 32 and len(json.loads(answers.read_text())) == 2
    out = tmp_path / "mine.json"
    argv = ["generate", "--model_name_or_path", "builtin:tiny-llama", "--questions", str(questions), "--output"]
    assert main([*argv, str(out), "--max_new_tokens", "4"]) == 0
    assert json.loads(out.with_name(out.name + ".settings.json").read_text())["max_new_tokens"] == 4
