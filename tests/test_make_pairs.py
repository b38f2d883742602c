"""``amapo make-pairs``: prompts from any source, selection and tie rules on hand-made scores, the whole loop on the
built-in task (its true reward), resume after a kill equal to an uninterrupted run, data-parallel processes equal to
one, and every bad input as one line before the policy loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from command_line import error_line
from launching import failure_message, free_port

import amapo.onpolicy.run as run_module
from amapo.cli import main
from amapo.errors import UserError
from amapo.onpolicy.prompts import read_prompts
from amapo.onpolicy.sampling import answer_seed
from amapo.onpolicy.selection import DROP_EMPTY, DROP_TIED, select_pair, select_pairs

POLICY = "builtin:tiny-llama"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- selection ------------------------------------------------------------------------------------------------


def test_best_is_chosen_worst_rejected_first_of_equals():
    row = select_pair("reverse: ab =", ["x", "y", "z", "w"], [0.5, 0.9, 0.9, 0.1])
    assert (row["chosen"], row["rejected"]) == ("y", "w")  # the first of the two best
    assert row["score_chosen"] == 0.9 and row["score_rejected"] == 0.1
    assert row["reward_gap"] == pytest.approx(0.8)
    assert select_pair("p", ["a", "b", "c"], [0.2, 0.2, 0.7])["rejected"] == "a"  # the first of the two worst


def test_ties_and_empty_answers_give_no_pair_and_are_counted():
    assert select_pair("p", ["a", "b", "c"], [0.3, 0.3, 0.3]) == DROP_TIED
    assert select_pair("p", ["a", "a"], [0.5, 0.5]) == DROP_TIED  # identical answers
    assert select_pair("p", ["", "  ", "c"], [0.9, 0.8, 0.1]) == DROP_EMPTY
    row = select_pair("p", ["", "b", "c"], [0.9, 0.5, 0.1])  # the empty best is skipped
    assert (row["chosen"], row["rejected"]) == ("b", "c")
    row = select_pair("p", ["a", "b", "c", "d"], [0.9, 0.5, 0.3, 0.1], finished=[False, True, True, False])
    assert (row["chosen"], row["rejected"]) == ("b", "c")  # answers cut at --max_new_tokens are never paired
    assert select_pair("p", ["a", "b"], [0.9, 0.1], finished=[True, False]) == DROP_EMPTY
    pairs, dropped = select_pairs(
        [
            {"prompt": "p", "samples": ["a", "b"], "scores": [1.0, 0.0]},
            {"prompt": "q", "samples": ["a", "b"], "scores": [1.0, 1.0]},
            {"prompt": "r", "samples": ["", "b"], "scores": [1.0, 0.0]},
        ]
    )
    assert len(pairs) == 1 and dropped == {DROP_TIED: 1, DROP_EMPTY: 1}


def test_answers_that_are_not_valid_utf8_are_never_paired():
    """Issue 27: a byte-level tokenizer can stop mid-character; decoding writes U+FFFD there. 505 of 1,838 pairs
    of a built-in make-pairs run held such text."""
    broken = "ab\ufffd"  # what decode gives for b"ab\xe2\x82"
    assert b"ab\xe2\x82".decode("utf-8", errors="replace") == broken
    row = select_pair("p", [broken, "b", "c"], [0.9, 0.5, 0.1])
    assert (row["chosen"], row["rejected"]) == ("b", "c")
    assert select_pair("p", [broken, "c"], [0.9, 0.1]) == DROP_EMPTY and "valid UTF-8" in DROP_EMPTY


def test_conversational_prompts_give_conversational_pairs_and_samples_are_kept_on_request():
    prompt = [{"role": "user", "content": "hi"}]
    row = select_pair(prompt, ["a", "b"], [2.0, 1.0], keep_samples=True)
    assert row["chosen"] == [{"role": "assistant", "content": "a"}] and row["prompt"] == prompt
    assert row["all_generated_responses"] == ["a", "b"] and row["all_rm_scores"] == [2.0, 1.0]


def test_answer_seeds_are_distinct_and_stable():
    seeds = {answer_seed(s, i, j) for s in (1, 2) for i in range(50) for j in range(5)}
    assert len(seeds) == 500 and answer_seed(1, 0, 0) == answer_seed(1, 0, 0) < 2**63


# --- prompts ----------------------------------------------------------------------------------------------------


def test_prompts_from_each_kind_of_source(tmp_path):
    def conversation(prompt: str, answer: str) -> list[dict]:
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]

    # HuggingFaceH4/ultrafeedback_binarized's shape: a string prompt beside whole conversations
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "a", "chosen": conversation("a", "x"), "rejected": conversation("a", "y")},
        {"prompt": "b", "chosen": conversation("b", "x"), "rejected": conversation("b", "z")},
    ])  # fmt: skip
    assert read_prompts(str(pairs)).prompts == [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": p} for p in ["q1", "q2", "q1", "q3"]])
    found = read_prompts(str(plain))
    assert found.prompts == ["q1", "q2", "q3"] and found.duplicates == 1
    assert read_prompts(str(plain), max_prompts=2).prompts == ["q1", "q2"]
    assert read_prompts(str(plain), "train[1:]", prompt_format="chat").prompts[0] == [{"role": "user", "content": "q2"}]
    chats = write_jsonl(tmp_path / "chats.jsonl", [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "a"}]},
    ])  # fmt: skip
    assert read_prompts(str(chats)).prompts == [[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]]
    assert read_prompts("builtin:reverse/in_distribution").prompts[0].startswith("reverse: ")


# --- the loop on the built-in task -------------------------------------------------------------------------------


def make_pairs_args(output: Path, *extra: str) -> list[str]:
    return [
        "make-pairs", "--model_name_or_path", POLICY, "--prompts", "builtin:reverse/in_distribution",
        "--prompts_split", "train[:12]", "--reward", "builtin:reverse", "--output", str(output),
        "--num_samples", "4", "--max_new_tokens", "12", "--temperature", "1.0", "--prompts_per_shard", "4",
        "--batch_size", "16", *extra,
    ]  # fmt: skip


def test_the_whole_loop_on_the_builtin_task(tmp_path, capsys):
    from amapo.builtin.task import true_reward

    output = tmp_path / "pairs.jsonl"
    assert main(make_pairs_args(output, "--keep_samples", "true")) == 0
    pairs = read_pairs(output)
    assert 0 < len(pairs) <= 12
    for pair in pairs:
        assert pair["score_chosen"] == true_reward(pair["prompt"], pair["chosen"])
        answers, scores = pair["all_generated_responses"], pair["all_rm_scores"]
        assert len(answers) == 4 and scores == [true_reward(pair["prompt"], a) for a in answers]
        assert pair["score_chosen"] == scores[answers.index(pair["chosen"])] > pair["score_rejected"]
    out = capsys.readouterr().out
    assert f"{len(pairs)} pairs from 12 prompts written to {output}" in out
    assert not (tmp_path / "pairs.jsonl.shards").exists()  # removed once merged
    settings = json.loads((tmp_path / "pairs.jsonl.settings.json").read_text())
    assert settings["num_samples"] == 4 and settings["seed"] == 42 and settings["reward"] == "builtin:reverse"
    assert main(make_pairs_args(output, "--keep_samples", "true")) == 0  # a finished run: nothing to do
    assert "is complete for these settings: nothing to do" in capsys.readouterr().out
    # the pairs train: amapo train reads them as they are
    assert main(["train", "--config", "builtin", "--dataset", str(output), "--max_steps", "1", "--eval_datasets",
                 "none", "--output_dir", str(tmp_path / "run")]) == 0  # fmt: skip


def test_a_run_killed_mid_way_and_resumed_writes_the_same_file(tmp_path, monkeypatch):
    whole = tmp_path / "whole.jsonl"
    assert main(make_pairs_args(whole, "--keep_samples", "true")) == 0
    resumed = tmp_path / "resumed.jsonl"
    real_write = run_module.ShardStore.write
    written = []

    def die_after_two_shards(self, kind, rank, rows):
        if len(written) == 2:
            raise KeyboardInterrupt  # a kill between two shards
        written.append(kind)
        return real_write(self, kind, rank, rows)

    monkeypatch.setattr(run_module.ShardStore, "write", die_after_two_shards)
    assert main(make_pairs_args(resumed, "--keep_samples", "true")) == 130  # Ctrl-C: one line, exit 130
    assert len(list((tmp_path / "resumed.jsonl.shards").glob("samples-*"))) == 2 and not resumed.exists()
    monkeypatch.setattr(run_module.ShardStore, "write", real_write)
    sampled = []
    real_sample = run_module.sample_with_transformers
    monkeypatch.setattr(
        run_module,
        "sample_with_transformers",
        lambda model, tok, chunk, *a, **kw: sampled.extend(chunk) or real_sample(model, tok, chunk, *a, **kw),
    )
    assert main(make_pairs_args(resumed, "--keep_samples", "true")) == 0
    assert len(sampled) == 4  # only the last of three shards of 4 prompts was sampled again
    assert resumed.read_text() == whole.read_text()


def test_a_rerun_with_other_settings_is_refused(tmp_path, capsys):
    output = tmp_path / "pairs.jsonl"
    assert main(make_pairs_args(output)) == 0
    capsys.readouterr()
    assert main(make_pairs_args(output, "--seed", "7")) == 2
    line = error_line(capsys, "make-pairs")
    assert line.startswith(f"{output} belongs to a run with other settings (seed: 7 now, 42 then)")
    # a run sampled before issue 28 (its settings name no sampler) is not continued with the new draws
    settings = output.with_name("pairs.jsonl.settings.json")
    recorded = json.loads(settings.read_text())
    assert recorded.pop("sampler") == "counter-v1"
    settings.write_text(json.dumps(recorded))
    assert main(make_pairs_args(output)) == 2
    assert "(sampler: 'counter-v1' now, not recorded then)" in error_line(capsys, "make-pairs")


def test_two_processes_give_the_file_of_one(tmp_path):
    """accelerate launch with 2 CPU processes: each samples and scores every other prompt, the first merges."""
    one = tmp_path / "one.jsonl"
    assert main(make_pairs_args(one)) == 0
    two = tmp_path / "two.jsonl"
    env = {**os.environ, "AMAPO_CACHE": os.environ["AMAPO_CACHE"]}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
               "--main_process_port", str(free_port()), "-m", "amapo.cli", *make_pairs_args(two)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, failure_message("amapo make-pairs", done, tmp_path / "two.log")
    assert two.read_text() == one.read_text()


# --- bad input: one line, before the policy loads -----------------------------------------------------------------


@pytest.fixture
def no_policy_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the policy was loaded before the error was found")

    monkeypatch.setattr("amapo.model.loading.load_model", refuse)


def test_bad_inputs_are_one_line_before_the_policy_loads(tmp_path, capsys, no_policy_loading):
    out = tmp_path / "pairs.jsonl"
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"text": "no prompt here"}])
    base = ["make-pairs", "--model_name_or_path", POLICY, "--reward", "builtin:reverse", "--output", str(out)]
    assert main([*base, "--prompts", str(empty)]) == 2
    assert error_line(capsys, "make-pairs") == (
        f"--prompts {empty}@train: no prompts: its columns are text; make-pairs reads a `prompt` column (a string or "
        "messages), preference pairs (`chosen` / `rejected`), or conversations (`messages`)"
    )
    assert main([*base, "--prompts", str(tmp_path / "missing.jsonl")]) == 2
    assert "not found" in error_line(capsys, "make-pairs")
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"prompt": [{"role": "user", "content": "reverse: ab ="}]}])
    no_template = tmp_path / "no-template"
    from amapo.builtin import resolve_source
    from amapo.model.loading import load_tokenizer

    tokenizer = load_tokenizer(resolve_source(POLICY))
    tokenizer.chat_template = None
    tokenizer.save_pretrained(no_template)
    (no_template / "config.json").write_text((Path(resolve_source(POLICY)) / "config.json").read_text())
    for name in ("chat_template.jinja",):
        (no_template / name).unlink(missing_ok=True)
    argv = [*base, "--prompts", str(chats)]
    argv[argv.index(POLICY)] = str(no_template)
    assert main(argv) == 2
    assert error_line(capsys, "make-pairs") == (
        f"the prompts of {chats} are conversations and the policy {no_template} has no chat template to render them: "
        "pass --chat_template (Jinja text or a .jinja file)"
    )
    assert main([*base, "--prompts", "builtin:reverse", "--num_samples", "1"]) == 2
    assert error_line(capsys, "make-pairs") == "--num_samples must be >= 2 (a pair needs two answers), got 1"
    assert main([*base, "--prompts", "builtin:reverse", "--top_p", "0"]) == 2
    assert error_line(capsys, "make-pairs") == "--top_p must be in (0, 1], got 0.0"
    assert not out.exists() and not (tmp_path / "pairs.jsonl.shards").exists()


# --- the vLLM engine, through a stand-in for vllm (no GPU here) ---------------------------------------------------

FAKE_VLLM = '''
"""A stand-in for vllm's LLM and SamplingParams: answer k of "reverse: WORD =" is the first k + 1 letters of the
reversed word, the first answer cut at max_tokens; every engine start and request is logged to $FAKE_VLLM_LOG."""
import json, os
from types import SimpleNamespace

from transformers import AutoTokenizer

def log(record):
    with open(os.environ["FAKE_VLLM_LOG"], "a") as f:
        f.write(json.dumps(record) + "\\n")

class SamplingParams:
    def __init__(self, **options):
        self.options = options

class LLM:
    def __init__(self, model, **options):
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        log({"start": model, **options, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()})

    def generate(self, requests, params, use_tqdm=True):
        outputs = []
        for request, p in zip(requests, params):
            log({"prompt_token_ids": request["prompt_token_ids"], **p.options})
            word = self.tokenizer.decode(request["prompt_token_ids"]).split("reverse: ")[1].split(" =")[0]
            answers = [SimpleNamespace(text=" " + word[::-1][: k + 1] + " ", finish_reason="length" if k == 0
                                       else "stop") for k in range(p.options["n"])]
            outputs.append(SimpleNamespace(outputs=answers))
        return outputs
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch) -> Path:
    package = tmp_path / "fake" / "vllm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_VLLM)
    monkeypatch.syspath_prepend(str(package.parent))  # the spawned child gets the parent's sys.path
    log = tmp_path / "vllm-log.jsonl"
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return log


def test_vllm_samples_in_its_own_process_with_the_mapped_settings(tmp_path, capsys, fake_vllm, no_policy_loading):
    from amapo.builtin import resolve_source
    from amapo.builtin.task import true_reward
    from amapo.model.generate import render_prompt
    from amapo.model.loading import load_tokenizer

    output = tmp_path / "pairs.jsonl"
    args = make_pairs_args(output, "--engine", "vllm", "--keep_samples", "true", "--seed", "7")
    assert main(args) == 0  # the policy never loads in transformers (no_policy_loading)
    start, *requests = [json.loads(line) for line in fake_vllm.read_text().splitlines()]
    assert start["start"] == resolve_source(POLICY) and start["seed"] == 7 and start["pid"] != os.getpid()
    assert start["visible"] is None  # one process: every GPU stays visible
    tokenizer = load_tokenizer(resolve_source(POLICY))
    prompts = read_prompts("builtin:reverse/in_distribution", "train[:12]").prompts
    assert len(requests) == 12
    for index, (prompt, request) in enumerate(zip(prompts, requests, strict=True)):
        text, templated = render_prompt(tokenizer, prompt)
        assert request["prompt_token_ids"] == tokenizer(text, add_special_tokens=not templated)["input_ids"]
        assert request["n"] == 4 and request["max_tokens"] == 12 and request["seed"] == answer_seed(7, index, 0)
        assert (request["temperature"], request["top_p"]) == (1.0, 0.95)
        assert request["stop_token_ids"] == [tokenizer.eos_token_id]
    pairs = read_pairs(output)
    assert len(pairs) == 12
    for pair in pairs:
        answers = pair["all_generated_responses"]
        reverse = pair["prompt"].split("reverse: ")[1].split(" =")[0][::-1]
        assert answers == [reverse[:1], reverse[:2], reverse[:3], reverse[:4]]  # stripped, as transformers' answers
        assert pair["all_rm_scores"] == [true_reward(pair["prompt"], a) for a in answers]
        assert (pair["chosen"], pair["rejected"]) == (answers[3], answers[1])  # answers[0] was cut: never paired
    assert "engine: vllm" in capsys.readouterr().out


def test_vllms_process_sees_only_the_gpu_it_is_given(tmp_path, fake_vllm):
    from amapo.builtin import resolve_source
    from amapo.onpolicy.sampling import SamplingSettings, VllmJob, sample_in_vllm_process

    prompts = list(enumerate(read_prompts("builtin:reverse/in_distribution", "train[:3]").prompts))
    job = VllmJob(resolve_source(POLICY), None, SamplingSettings(num_samples=2), prompts, str(tmp_path / "p.jsonl"),
                  rank=1, prompts_per_shard=2, show_progress=False, visible_devices="6")  # fmt: skip
    sample_in_vllm_process(job)
    assert json.loads(fake_vllm.read_text().splitlines()[0])["visible"] == "6"
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None  # this process's own is untouched
    shards = sorted(p.name for p in (tmp_path / "p.jsonl.shards").iterdir())
    assert shards == ["samples-r001-00000000.jsonl", "samples-r001-00000002.jsonl"]


def test_vllm_engine_needs_vllm_and_each_process_gets_its_own_gpu(tmp_path, capsys, monkeypatch, no_policy_loading):
    from amapo.onpolicy.sampling import gpu_of_local_rank

    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    out = tmp_path / "pairs.jsonl"
    assert main(make_pairs_args(out, "--engine", "vllm")) == 2
    assert error_line(capsys, "make-pairs") == (
        "--engine vllm: vLLM is not installed; pip install 'amapo[vllm]' (it needs a GPU), or use --engine transformers"
    )
    assert not out.exists() and not (tmp_path / "pairs.jsonl.settings.json").exists()
    assert gpu_of_local_rank(1, None) == "1"
    assert gpu_of_local_rank(1, "4, 6") == "6"
    with pytest.raises(UserError, match="process 2 of this machine has no GPU of its own"):
        gpu_of_local_rank(2, "4,6")
