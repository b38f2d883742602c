"""Every user error of `amapo train` is one line (`amapo train: error: ...`, exit 2, no traceback) that names the
option, file and line or row, found before any model loads; bugs keep their traceback; --help stays light."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from launching import signal_while_loading

import amapo.evaluation.run
import amapo.train.run
from amapo.builtin import resolve_source
from amapo.cli import main

MODEL = "builtin:tiny-llama"


def pairs_file(tmp_path: Path, text: str | bytes, name: str = "pairs.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def rows(*pairs: dict) -> str:
    return "".join(json.dumps(p) + "\n" for p in pairs)


GOOD = {"prompt": "p", "chosen": "a", "rejected": "b"}
WITH_REF = {**GOOD, "ref_chosen_logps": -1.0, "ref_rejected_logps": -2.0}
CHAT = {
    "prompt": [{"role": "user", "content": "p"}],
    "chosen": [{"role": "assistant", "content": "a"}],
    "rejected": [{"role": "assistant", "content": "b"}],
}


def user_data(tmp_path: Path, text: str | bytes, name: str = "pairs.jsonl") -> list[str]:
    return ["--model_name_or_path", MODEL, "--dataset", pairs_file(tmp_path, text, name)]


def folder(tmp_path: Path, name: str, *files: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    for file in files:
        (path / file).write_text(rows(GOOD) if file.endswith("jsonl") else "prompt,chosen,rejected\np,a,b\n")
    return path


def model_without_type(tmp_path: Path) -> Path:
    """A folder with a config.json transformers cannot map to a model class."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def recipe(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "recipe.yaml").write_text(text)
    return ["--config", str(tmp_path / "recipe.yaml"), "--model_name_or_path", MODEL, "--dataset", "builtin:reverse"]


def bad_recipe(tmp_path: Path) -> list[str]:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("method: amapo\nbeta: !!python/object/apply:os.system ['true']\n")
    return ["--config", str(recipe)]


# (case, arguments built from tmp_path, words the one line must hold)
CASES = [
    ("misspelt option", lambda t: ["--lerning_rate", "1e-3"], ["--lerning_rate (did you mean --learning_rate?)"]),
    ("unknown method", lambda t: ["--method", "nosuch"], ["--method", "unknown loss 'nosuch'", "amapo, "]),
    ("negative beta", lambda t: ["--beta", "-1"], ["beta must be > 0"]),
    ("infinite beta", lambda t: ["--beta", "inf"], ["--beta must be a finite number, got inf"]),
    ("nan learning rate", lambda t: ["--learning_rate", "nan"], ["--learning_rate must be a finite number"]),
    ("zero batch", lambda t: ["--per_device_train_batch_size", "0"], ["--per_device_train_batch_size must be >= 1"]),
    ("zero accumulation", lambda t: ["--gradient_accumulation_steps", "0"], ["--gradient_accumulation_steps", ">= 1"]),
    ("warm-up above 1", lambda t: ["--warmup_ratio", "1.5"], ["--warmup_ratio must be in [0, 1]"]),
    ("unsafe YAML", bad_recipe, ["bad.yaml:2", "not a valid YAML recipe"]),
    ("missing recipe", lambda t: ["--config", "nosuch-recipe"], ["--config", "nosuch-recipe", "llama3-8b-base-amapo"]),
    ("missing model folder", lambda t: ["--model_name_or_path", "./nowhere", "--dataset", "builtin:reverse"],
     ["--model_name_or_path", "./nowhere"]),
    ("missing dataset", lambda t: ["--model_name_or_path", MODEL, "--dataset", "nope.jsonl"],
     ["--dataset", "nope.jsonl"]),
    ("user data, no model", lambda t: ["--dataset", pairs_file(t, rows(GOOD))], ["--model_name_or_path", "--config"]),
    ("eval_steps while eval is off", lambda t: ["--eval_steps", "5"], ["--eval_steps 5", "--eval_strategy steps"]),
    ("adam beta of 1", lambda t: ["--adam_beta2", "1"], ["--adam_beta2 must be in [0, 1), got 1.0"]),
    ("zero max_steps", lambda t: ["--max_steps", "0"], ["--max_steps must be -1 (off) or > 0, got 0"]),
    ("save_steps while saving is off", lambda t: ["--save_steps", "10"], ["--save_steps 10", "--save_strategy steps"]),
    ("bad role mapping", lambda t: ["--role_mapping", '{"human": "person"}'], ["--role_mapping", "'person'"]),
    ("bad column mapping", lambda t: ["--column_mapping", "{chosen"], ["--column_mapping must be a JSON object"]),
    ("bad eval set entry", lambda t: ["--eval_datasets", "held.jsonl"], ["--eval_datasets", "NAME=SOURCE"]),
    ("bad row", lambda t: user_data(t, rows(GOOD, GOOD, GOOD, {**GOOD, "rejected": ""})), ["row 3", "'rejected'"]),
    ("malformed JSON line", lambda t: user_data(t, rows(GOOD) + '{"prompt": "p",\n'), ["pairs.jsonl:2", "JSON"]),
    ("empty file", lambda t: user_data(t, ""), ["pairs.jsonl", "empty"]),
    ("invalid UTF-8", lambda t: user_data(t, rows(GOOD).encode() + b'{"prompt": "\xff"}\n'),
     ["pairs.jsonl:2", "UTF-8"]),
    ("unknown role", lambda t: user_data(t, rows({**CHAT, "prompt": [{"role": "human", "content": "p"}]})),
     ["row 0", "'human'", "--role_mapping"]),
    ("mixed formats", lambda t: user_data(t, rows(GOOD, CHAT)), ["row 1", "row 0"]),
    ("max_length beyond positions", lambda t: ["--max_length", "1024"], ["--max_length 1024", "512 positions"]),
    # issue 27: the inputs a user names, checked for existence, kind and readability before anything loads
    ("parquet holding JSON", lambda t: user_data(t, rows(GOOD), "pairs.parquet"),
     ["--dataset", "pairs.parquet is not a Parquet file", "name it .jsonl"]),
    ("empty folder", lambda t: ["--model_name_or_path", MODEL, "--dataset", str(folder(t, "empty"))],
     ["--dataset", "holds no data file"]),
    ("folder of two formats", lambda t: ["--model_name_or_path", MODEL, "--dataset", str(folder(t, "mixed", "a.jsonl",
                                                                                                "b.csv"))],
     ["mixes formats (.csv, .json)"]),
    ("unknown data suffix", lambda t: user_data(t, rows(GOOD), "pairs.txt"),
     ["--dataset", "pairs.txt is not a data file amapo reads", ".jsonl"]),
    ("empty eval-set path", lambda t: ["--eval_datasets", "x="], ["--eval_datasets", "NAME=SOURCE", "'x='"]),
    ("eval set without a name", lambda t: ["--eval_datasets", "=held.jsonl"], ["--eval_datasets", "'=held.jsonl'"]),
    ("eval set in a bad parquet", lambda t: ["--eval_datasets", f"held={pairs_file(t, rows(GOOD), 'held.parquet')}"],
     ["--eval_datasets", "held.parquet is not a Parquet file"]),
    ("recipe value of the wrong type", lambda t: recipe(t, "method: simpo\nbeta: two\n"),
     ["recipe.yaml:2: beta: 'two' is not a number", "beta: 2.5"]),
    ("recipe flag of the wrong type", lambda t: recipe(t, "use_peft: maybe\n"), ["recipe.yaml:1", "true or false"]),
    ("flag of the wrong type", lambda t: ["--beta", "two"], ["argument --beta: invalid float value: 'two'"]),
    ("recipe that is a folder", lambda t: ["--config", str(folder(t, "recipes"))], ["is a folder", "YAML recipe"]),
    ("non-finite reference log-prob", lambda t: [*user_data(t, rows(*[WITH_REF] * 3, {**WITH_REF, "ref_chosen_logps":
     float("nan")})), "--method", "dpo"], ["pairs.jsonl:4, row 3, field 'ref_chosen_logps': must be a finite number, "
                                           "got nan", "--drop_invalid_rows true"]),
    ("non-finite offset", lambda t: [*user_data(t, rows({**GOOD, "offset": float("inf")})), "--method", "odpo"],
     ["row 0, field 'offset': must be a finite number, got inf"]),
    # found by using amapo as a new user: each was a transformers traceback while the model loaded
    ("unknown attention kernel", lambda t: ["--attn_implementation", "flex"],
     ["--attn_implementation must be one of eager, sdpa, flex_attention", "got 'flex'"]),
    ("unclosed JSON row", lambda t: user_data(t, '{"prompt": "p", "chosen": "a"\n'),
     ["pairs.jsonl:1: not valid JSON (Expecting ',' delimiter at column 30)"]),
    ("model folder transformers cannot read", lambda t: ["--model_name_or_path", str(model_without_type(t)),
                                                         "--dataset", "builtin:reverse"],
     ["--model_name_or_path", "not a model transformers reads", "model_type"]),
    ("unknown report_to", lambda t: ["--report_to", "nosuch"],
     ["--report_to nosuch: not an integration transformers knows", "tensorboard", "wandb"]),
]  # fmt: skip


@pytest.mark.parametrize("case,make_args,words", CASES, ids=[c[0] for c in CASES])
def test_user_errors_are_one_line_before_any_model_loads(capsys, monkeypatch, tmp_path, case, make_args, words):
    def no_model(*_, **__):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(amapo.train.run, "load_model", no_model)
    out = tmp_path / "out"
    assert main(["train", *make_args(tmp_path), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("amapo")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("amapo train: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    "command,args,hint",
    [("eval", ["--model_name_or_path", "m", "--bta", "2"], "--bta (did you mean --beta?)"),
     ("analyze", ["--model_name_or_path", "m", "--dataset", "d", "--bacth_size", "2"],
      "--bacth_size (did you mean --batch_size?)"),
     ("compare", ["--methodz", "dpo"], "--methodz (did you mean --methods?)")],
)  # fmt: skip
def test_misspelt_options_of_other_commands_are_one_line(capsys, command, args, hint):
    assert main([command, *args]) == 2
    err = capsys.readouterr().err
    expected = f"amapo {command}: error: unknown option(s) {hint}; `amapo {command} --help` lists every option"
    assert err.strip() == expected


def test_amapo_debug_shows_the_traceback_of_a_user_error(capsys, monkeypatch):
    monkeypatch.setenv("AMAPO_DEBUG", "1")
    assert main(["train", "--beta", "inf"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("amapo train: error: --beta")


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(*_, **__):
        raise KeyError("a bug")

    monkeypatch.setattr("amapo.train.parsing.recipe_defaults", broken)
    with pytest.raises(KeyError):
        main(["train"])


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_imports_neither_torch_nor_training_arguments():
    done = python(
        "import sys\nfrom amapo.cli import main\n"
        "for argv in (['--help'], ['train', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'transformers.training_args') if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    assert "--model_name_or_path" in done.stdout and "--help-all" in done.stdout
    # if transformers' own HfArgumentParser imports torch (5.0's did), only TrainingArguments counts
    parser_alone = python("import sys\nfrom transformers import HfArgumentParser\nprint('torch' in sys.modules)")
    allowed = "['torch']" if parser_alone.stdout.strip() == "True" else "[]"
    assert done.stdout.strip().splitlines()[-1] == allowed


def refused_before_training_arguments(args: list[str]) -> str:
    """`amapo train ARGS` in a fresh process: exit 2 without importing TrainingArguments; returns stderr."""
    done = python(
        "import sys\nfrom amapo.cli import main\n"
        f"code = main(['train', *{args!r}])\n"
        "print(code, 'transformers.training_args' in sys.modules)"
    )
    assert done.stdout.strip().splitlines()[-1] == "2 False", done.stdout + done.stderr
    return done.stderr


@pytest.mark.parametrize(
    "args,message",
    [(["--model_name_or_path", "builtin:tiny-llama", "--dataset", "missing.jsonl"],
      "--dataset: no such file or folder missing.jsonl"),
     (["--config", "builtin", "--lerning_rate", "1"],
      "unknown option(s) --lerning_rate (did you mean --learning_rate?)"),
     (["--config", "builtin", "--report_to", "none", "--bf16", "true", "--beta", "inf"], "--beta must be a finite")],
)  # fmt: skip
def test_a_bad_option_is_found_before_training_arguments_are_imported(args, message):
    assert f"amapo train: error: {message}" in refused_before_training_arguments(args)


def test_a_folder_holding_a_run_is_refused_before_training_arguments_are_imported(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    err = refused_before_training_arguments(["--config", "builtin", "--output_dir", str(tmp_path)])
    assert f"amapo train: error: {tmp_path} already holds a run" in err
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"  # untouched


def test_training_argument_names_read_from_source_match_the_dataclass():
    from dataclasses import fields

    from transformers import TrainingArguments

    from amapo.hf_internals import training_argument_names

    assert training_argument_names() == {f.name for f in fields(TrainingArguments)}


def test_help_all_lists_training_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help-all"])
    text = capsys.readouterr().out
    assert "--report_to" in text and "--gradient_accumulation_steps" in text and "--method" in text


def test_help_shows_the_defaults_of_a_run_on_your_data(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Peak learning rate (AdamW). (default: 5e-07)" in text  # not the built-in recipe's 1e-3


def test_the_builtin_model_by_name_brings_its_defaults_but_not_the_demo_data(tmp_path):
    from amapo.train.parsing import parse_train_args

    data = pairs_file(tmp_path, Path(resolve_source("builtin:reverse")).read_text())
    config = parse_train_args(["--model_name_or_path", MODEL, "--dataset", data])
    assert (config.learning_rate, config.max_length, config.eval_datasets) == (1e-3, 64, [])
    assert config.output_dir == "outputs/amapo"  # not the demo's folder


def test_transformers_internals_amapo_relies_on_are_checked():
    """``hf_internals`` names every Trainer method amapo overrides; a release that changed one stops at import with
    the version named, instead of training with an override that is never called."""
    from transformers import Trainer
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from amapo.hf_internals import CHECKPOINT_PREFIX, TRAINER_HOOKS, check_trainer_hooks
    from amapo.train.trainer import PreferenceTrainer

    assert CHECKPOINT_PREFIX == PREFIX_CHECKPOINT_DIR
    documented = {"__init__", "create_optimizer"}  # transformers documents these for subclassing
    overridden = {name for name in vars(PreferenceTrainer) if callable(getattr(Trainer, name, None))} - documented
    called = {"_prepare_inputs", "compute_loss_context_manager"}
    assert overridden | called <= set(TRAINER_HOOKS), "an override is missing from hf_internals.TRAINER_HOOKS"
    check_trainer_hooks(Trainer)

    class Renamed(Trainer):
        def get_batch_samples(self, iterator, count, device):  # as a future release might rename them
            return None

    Renamed._save_checkpoint = None
    with pytest.raises(RuntimeError, match=r"Trainer\._save_checkpoint is missing, amapo overrides or calls it"):
        check_trainer_hooks(Renamed)
    del Renamed._save_checkpoint
    with pytest.raises(RuntimeError, match=r"get_batch_samples is \(iterator, count, device\)"):
        check_trainer_hooks(Renamed)


def test_the_attention_names_amapo_accepts_are_transformers_own():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from amapo.attention_names import ATTENTION_IMPLEMENTATIONS

    theirs = {name for name in ALL_ATTENTION_FUNCTIONS.valid_keys() if not name.startswith("paged|")}
    assert theirs <= set(ATTENTION_IMPLEMENTATIONS) <= theirs | {"eager", "flash_attention_4"}


# --- issue 27: the last tracebacks and silent runs ------------------------------------------------------------


def test_an_output_dir_that_is_a_file_is_one_line_and_the_file_stays(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    assert main(["train", "--output_dir", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"amapo train: error: --output_dir {target} is a file, not a folder: choose another --output_dir " \
                  "(the file is left as it is)"  # fmt: skip
    assert target.read_text() == "mine\n"


def test_ctrl_c_while_importing_is_one_line_and_exit_130(tmp_path):
    """SIGINT before training starts (here: while torch and transformers import) is exit 130 and one line, not a
    KeyboardInterrupt traceback; during training the checkpoint-then-stop of test_reliability applies."""
    done = signal_while_loading(signal.SIGINT, tmp_path / "out")
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "amapo train: interrupted" and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_transformers_outside_the_tested_range_is_one_warning_line(monkeypatch, capsys):
    import importlib.metadata

    from amapo.hf_internals import TESTED_TRANSFORMERS, outside_tested_range

    assert not outside_tested_range(TESTED_TRANSFORMERS[0]) and not outside_tested_range(TESTED_TRANSFORMERS[-1])
    assert outside_tested_range("5.22.1") and outside_tested_range("5.99.0") and outside_tested_range("6.0.0")
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "5.99.0" if name == "transformers" else "0")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"amapo: warning: transformers 5.99.0 is outside the range amapo is tested on "
                   f"({TESTED_TRANSFORMERS[0]} to {TESTED_TRANSFORMERS[-1]}); if something breaks, pip install "
                   f"'transformers=={TESTED_TRANSFORMERS[-1]}'"]  # fmt: skip


def test_ci_tests_the_range_the_install_allows():
    """pyproject's transformers range is exactly TESTED_TRANSFORMERS (so the README install gets what CI tests)."""
    import re

    from amapo.hf_internals import TESTED_TRANSFORMERS

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    low, high = re.search(r'"transformers>=([\d.]+),<([\d.]+)"', pyproject).groups()
    oldest, newest = (tuple(map(int, v.split(".")[:2])) for v in TESTED_TRANSFORMERS)
    assert tuple(map(int, low.split("."))) == oldest
    assert tuple(map(int, high.split("."))) == (newest[0], newest[1] + 1)


def test_help_of_every_command_imports_no_torch():
    """--help builds the parser from the command's option dataclass alone (torch-free modules): quick everywhere,
    where eval, analyze, generate and make-pairs took 3-4 s and compare 7 s."""
    done = python(
        "import sys\nfrom amapo.cli import main\n"
        "for command in ('train', 'eval', 'analyze', 'compare', 'generate', 'make-pairs'):\n"
        "    try:\n        main([command, '--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'datasets', 'transformers.training_args') if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    parser_alone = python("import sys\nfrom transformers import HfArgumentParser\nprint('torch' in sys.modules)")
    allowed = "['torch']" if parser_alone.stdout.strip() == "True" else "[]"
    assert done.stdout.strip().splitlines()[-1] == allowed
    for option in ("--datasets", "--questions", "--prompts", "--methods"):
        assert option in done.stdout


def test_a_finished_built_in_run_is_refused_with_hints_that_work(tmp_path, capsys, monkeypatch):
    """The built-in run keeps no checkpoint: the refusal must not suggest --resume_from_checkpoint last."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"")
    assert main(["train", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"amapo train: error: {out} already holds a finished run: choose another --output_dir, or pass "
                   "--overwrite_output_dir true")  # fmt: skip


def test_confirmation_seeds_must_be_disjoint_from_the_discovery_seeds(capsys):
    assert main(["compare", "--seeds", "1", "2", "--confirm_seeds", "2", "3"]) == 2
    assert capsys.readouterr().err.strip() == (
        "amapo compare: error: --confirm_seeds must be disjoint from --seeds; both have 2"
    )


@pytest.mark.parametrize("command", ["train", "eval"])
def test_flash_attention_that_is_not_installed_is_one_line_before_the_model_loads(capsys, monkeypatch, command):
    monkeypatch.setattr("amapo.attention_names.find_spec", lambda name: None)  # as on a machine without flash-attn
    monkeypatch.setattr(amapo.train.run, "load_model", lambda *_, **__: pytest.fail("the model was loaded"))
    monkeypatch.setattr(amapo.evaluation.run, "load_models", lambda *_, **__: pytest.fail("the model was loaded"))
    args = [
        "--model_name_or_path",
        MODEL,
        "--attn_implementation",
        "flash_attention_2",
        "--max_length",
        "256",
        "--max_prompt_length",
        "128",
    ]
    data = {"eval": ["--datasets", "x=builtin:reverse", "--method", "simpo"], "train": ["--dataset", "builtin:reverse"]}
    assert main([command, *args, *data[command]]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # (building the built-in model may print a progress bar)
    assert err[-1] == (
        f"amapo {command}: error: --attn_implementation flash_attention_2 needs the flash_attn package "
        "(flash-attention, on a CUDA GPU), which is not installed: install it, name a Hub build of it (e.g. "
        "kernels-community/flash-attn2), or use sdpa or flex_attention"
    )


def test_a_report_to_whose_package_is_missing_is_one_line_before_anything_loads(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(  # as on a machine without wandb
        "transformers.integrations.integration_utils.get_available_reporting_integrations", lambda: ["tensorboard"]
    )
    monkeypatch.setattr(amapo.train.run, "resolve_source", lambda *_: pytest.fail("the built-in model was built"))
    out = tmp_path / "out"
    assert main(["train", "--report_to", "wandb", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "amapo train: error: --report_to wandb: its package is not installed: pip install wandb, or leave wandb out "
        "of --report_to (the run's metrics.jsonl has every logged metric either way)"
    )
    assert not out.exists()


def test_a_model_folder_without_tokenizer_or_weights_is_one_line_naming_it(capsys, tmp_path):
    from amapo.errors import UserError
    from amapo.model.loading import load_model

    folder = model_without_type(tmp_path)  # config.json only
    args = ["--model_name_or_path", str(folder), "--datasets", "x=builtin:reverse", "--method", "simpo"]
    assert main(["eval", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"amapo eval: error: {folder}: the folder holds no tokenizer (tokenizer.json, "), err
    (folder / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match=r"not a causal language model transformers can load \(.*model\.safetensors"):
        load_model(str(folder))
