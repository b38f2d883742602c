"""Rewards for on-policy pairs (``amapo.onpolicy.rewards``): the built-in true reward, pointwise reward models
(checked against a hand-made forward of the same rendered text), pairwise win rates (hand-worked numbers and a
classifier whose logit the test controls), and the one-line errors of ``check_reward``, which loads no weights.

The reward models are tiny random-init ``LlamaForSequenceClassification``s over the built-in byte tokenizer."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from amapo.builtin.tokenizer import build_byte_tokenizer
from amapo.errors import UserError
from amapo.onpolicy.rewards import (
    RewardSpec,
    check_reward,
    comparison_text,
    load_reward,
    sigmoid,
    win_probabilities,
    win_rates,
)

PROMPTS = [
    "What is the capital of France?",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime number."}],
    "reverse: abcd =",
]
SAMPLES = [
    ["Paris.", "It is Paris, the largest city of France.", "Lyon"],
    ["7", "Two is the only even prime.", "nine"],
    ["dcba", "dcbx", ""],
]


def _save_classifier(folder, num_labels: int, *, seed: int = 0, tokenizer=None) -> str:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = tokenizer or build_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=512, num_labels=num_labels, pad_token_id=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(folder)  # safetensors
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("reward-models")
    one, three = _save_classifier(root / "one", 1), _save_classifier(root / "three", 3, seed=1)
    no_template = root / "no-template"  # the same weights, a tokenizer without a chat template
    shutil.copytree(one, no_template)
    (no_template / "chat_template.jinja").unlink()
    no_pad = root / "no-pad"  # the same weights, a tokenizer without a pad token (EOS pads, as TRL)
    shutil.copytree(one, no_pad)
    tokenizer = build_byte_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(no_pad)
    return SimpleNamespace(one=one, three=three, no_template=str(no_template), no_pad=str(no_pad), root=root)


def _manual_value(folder: str, messages: list[dict], index: int = 0, template: str | None = None) -> float:
    """The reference: apply_chat_template, tokenize without a second BOS, one unpadded forward, logits[0, index]."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    model.config.pad_token_id = None  # one row, no padding: the last token
    text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, index].item()


def _conversation(prompt, answer: str) -> list[dict]:
    user = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return [*user, {"role": "assistant", "content": answer}]


# ------------------------------------------------------------------------------------------------ built-in


def test_builtin_scores_are_the_true_reward_by_hand():
    scorer = load_reward(RewardSpec("builtin:reverse"))
    prompts = ["reverse: abcd =", [{"role": "system", "content": "x"}, {"role": "user", "content": "reverse: ab ="}]]
    # target "dcba": all right; 3 of 4 positions; 2 right of max(2, 4); target "ba": 2 right of max(3, 2)
    assert scorer.score(prompts, [["dcba", "dcbx", "dc"], ["bax"]]) == [[1.0, 0.75, 0.5], [2 / 3]]
    assert check_reward(RewardSpec("builtin:reverse")) == "builtin:reverse (the built-in task's true reward)"


def test_builtin_names_a_foreign_prompt_and_refuses_what_does_not_apply():
    scorer = load_reward(RewardSpec("builtin:reverse"))
    long_prompt = "Please write a poem about the sea, the sky and everything in between them."
    with pytest.raises(UserError, match=re.escape(repr(long_prompt[:60]))):
        scorer.score([long_prompt], [["a"]])
    with pytest.raises(UserError, match="unknown built-in reward; known: builtin:reverse"):
        check_reward(RewardSpec("builtin:tiny-llama"))
    with pytest.raises(UserError, match="--reward_mode pairwise with builtin:reverse"):
        check_reward(RewardSpec("builtin:reverse", mode="pairwise"))
    with pytest.raises(UserError, match="--reward_index is for a reward model"):
        check_reward(RewardSpec("builtin:reverse", reward_index="0"))


# ------------------------------------------------------------------------------------------------ pointwise


def test_pointwise_scores_equal_a_manual_forward_of_the_rendered_chat(models):
    scorer = load_reward(RewardSpec(models.one), device="cpu")
    scores = scorer.score(PROMPTS, SAMPLES)
    for prompt, answers, row in zip(PROMPTS, SAMPLES, scores, strict=True):
        expected = [_manual_value(models.one, _conversation(prompt, a)) for a in answers]
        assert row == pytest.approx(expected, abs=1e-5)
    scorer.close()
    scorer.close()  # twice is harmless


def test_scores_do_not_depend_on_batch_size_or_batch_company(models):
    reference = load_reward(RewardSpec(models.one, batch_size=1), device="cpu").score(PROMPTS, SAMPLES)
    for batch_size in (2, 16):
        scores = load_reward(RewardSpec(models.one, batch_size=batch_size), device="cpu").score(PROMPTS, SAMPLES)
        for row, expected in zip(scores, reference, strict=True):
            assert row == pytest.approx(expected, abs=1e-5)
    # the same rows among other rows, in another order
    scorer = load_reward(RewardSpec(models.one, batch_size=4), device="cpu")
    shuffled = scorer.score([PROMPTS[2], "Other prompt", PROMPTS[0]], [SAMPLES[2][::-1], ["x" * 80], SAMPLES[0]])
    assert shuffled[0] == pytest.approx(reference[2][::-1], abs=1e-5)
    assert shuffled[2] == pytest.approx(reference[0], abs=1e-5)


EOS_TEMPLATE = "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
NO_EOS_TEMPLATE = "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"


@pytest.mark.parametrize("template", [EOS_TEMPLATE, NO_EOS_TEMPLATE], ids=["eos-in-rows", "no-eos"])
def test_without_a_pad_token_eos_pads_unless_a_row_holds_it(models, template):
    """No pad token: EOS pads (as TRL) and becomes the model's pad_token_id (the saved config says 256). A template
    that ends every turn with EOS puts it inside and at the end of each row, where transformers' classifier would
    take it for padding: then another id pads. Either way each score equals the row's unpadded forward."""
    scorer = load_reward(RewardSpec(models.no_pad, chat_template=template, batch_size=8), device="cpu")
    runner = scorer.runner
    assert runner.tokenizer.pad_token_id == runner.tokenizer.eos_token_id == 258
    assert runner.pad_id([[257, 5]]) == 258
    assert runner.pad_id([[257, 5, 258]]) == 256  # EOS is in a row: the config's pad id
    assert runner.pad_id([[257, 256, 0, 258]]) == 1  # both are: the lowest unused id
    scores = scorer.score(PROMPTS[:2], SAMPLES[:2])
    for prompt, answers, row in zip(PROMPTS[:2], SAMPLES[:2], scores, strict=True):
        expected = [_manual_value(models.no_pad, _conversation(prompt, a), template=template) for a in answers]
        assert row == pytest.approx(expected, abs=1e-5)


def test_a_rendered_chat_gets_one_bos_and_long_texts_keep_their_start(models):
    scorer = load_reward(RewardSpec(models.one, max_length=24), device="cpu")
    tokenizer = scorer.runner.tokenizer
    text = tokenizer.apply_chat_template(_conversation("hi", "a long answer " * 5), tokenize=False)
    assert tokenizer(text)["input_ids"][:2] == [257, 257]  # what a plain tokenizer call would do
    full = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = scorer.runner.encode(text, rendered=True)
    assert ids == full[:24] and ids[:2] == [257, 60] and scorer.truncated_rows == 1
    # a chat prompt that starts with the BOS text itself (pre-rendered) still gives one BOS
    doubled = tokenizer.apply_chat_template(_conversation("hi", "yes"), tokenize=False)
    assert scorer.runner.encode("<s>" + doubled, rendered=True)[:2] == [257, 60]


def test_several_outputs_need_reward_index(models):
    with pytest.raises(UserError) as err:
        check_reward(RewardSpec(models.three))
    assert str(err.value) == (
        f"reward model {models.three} has 3 outputs: pass --reward_index I (0..2), or --reward_index score for a model "
        "that returns a score, e.g. ArmoRM"
    )
    for bad, message in (("3", "--reward_index 3 is out of range"), ("-1", "must be an output number"),
                         ("best", "must be an output number")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            check_reward(RewardSpec(models.three, reward_index=bad))


def test_reward_index_picks_that_logit(models):
    description = check_reward(RewardSpec(models.three, reward_index="2"))
    assert description == f"reward model {models.three} (LlamaForSequenceClassification, 3 outputs, reading output 2)"
    scores = load_reward(RewardSpec(models.three, reward_index="2"), device="cpu").score(PROMPTS[:1], SAMPLES[:1])
    expected = [_manual_value(models.three, _conversation(PROMPTS[0], a), index=2) for a in SAMPLES[0]]
    assert scores[0] == pytest.approx(expected, abs=1e-5)


def test_reward_index_score_reads_score_and_says_when_there_is_none(models, monkeypatch):
    scorer = load_reward(RewardSpec(models.one, reward_index="score"), device="cpu")
    with pytest.raises(UserError, match=r"--reward_index score: reward model .* returns no \.score .*logits"):
        scorer.score(PROMPTS[:1], SAMPLES[:1])
    # An ArmoRM-shaped output: .score and .logits both 1-D (batch,), as its modeling_custom.py returns them.
    model = scorer.runner.model
    real_forward = model.forward

    def armo_forward(**inputs):
        value = real_forward(**inputs).logits[:, 0]
        return SimpleNamespace(score=3 * value, logits=value, rewards=torch.zeros(len(value), 19))

    monkeypatch.setattr(model, "forward", armo_forward)
    plain = load_reward(RewardSpec(models.one), device="cpu").score(PROMPTS[:1], SAMPLES[:1])[0]
    assert scorer.score(PROMPTS[:1], SAMPLES[:1])[0] == pytest.approx([3 * v for v in plain], abs=1e-5)
    scorer.runner.index = 0  # the default reading accepts 1-D logits too
    assert scorer.score(PROMPTS[:1], SAMPLES[:1])[0] == pytest.approx(plain, abs=1e-5)


# ------------------------------------------------------------------------------------------------ check_reward


def test_check_reward_describes_and_loads_no_weights(models, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    def no_weights(*args, **kwargs):
        raise AssertionError("check_reward loaded weights")

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", no_weights)
    monkeypatch.setattr("safetensors.torch.load_file", no_weights)
    assert (
        check_reward(RewardSpec(models.one)) == f"reward model {models.one} (LlamaForSequenceClassification, 1 output)"
    )
    assert check_reward(RewardSpec(models.three, reward_index="score")).endswith("3 outputs, reading .score)")
    assert check_reward(RewardSpec(models.one, mode="pairwise")).startswith(f"pairwise reward model {models.one} (")


def test_check_reward_one_line_errors_for_paths_and_templates(models, tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(UserError) as err:
        check_reward(RewardSpec(missing))
    assert str(err.value) == f"--reward: no such folder {missing} (looked in {missing})"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as err:
        check_reward(RewardSpec(str(empty)))
    assert str(err.value) == (
        f"--reward {empty} holds no model (no config.json): give a reward model's folder, e.g. one saved with "
        "save_pretrained"
    )
    with pytest.raises(UserError) as err:
        check_reward(RewardSpec(models.no_template))
    assert str(err.value) == (
        f"reward model {models.no_template}: its tokenizer has no chat template: pass --reward_chat_template (Jinja "
        "text or a .jinja file) in the format the reward model was trained on"
    )
    check_reward(RewardSpec(models.no_template, chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}"))
    check_reward(
        RewardSpec(models.no_template, mode="pairwise", pairwise_template="plain:{prompt}{response_a}{response_b}")
    )
    with pytest.raises(UserError, match=re.escape("missing {response_b}")):
        check_reward(RewardSpec(models.one, mode="pairwise", pairwise_template="{prompt} {response_a}"))
    with pytest.raises(UserError, match="--pairwise_template is for --reward_mode pairwise"):
        check_reward(RewardSpec(models.one, pairwise_template="{prompt}{response_a}{response_b}"))


def _write_config(folder, source: str, **changes) -> str:
    """A model folder holding only a config.json: the tiny reward model's, with ``changes``."""
    folder.mkdir()
    config = {**json.loads((Path(source) / "config.json").read_text()), **changes}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_custom_code_needs_trust_remote_code_and_a_policy_is_no_reward_model(models, tmp_path):
    source = models.one
    # ArmoRM's shape: model_type llama (AutoConfig loads it) and its own classifier class in auto_map
    armo_class = "modeling_custom.LlamaForRewardModelWithGating"
    armo = _write_config(tmp_path / "armo", source=source, auto_map={"AutoModelForSequenceClassification": armo_class},
                         architectures=["LlamaForRewardModelWithGating"])  # fmt: skip
    with pytest.raises(UserError, match=r"brings its own classifier code .* pass --trust_remote_code true$"):
        check_reward(RewardSpec(armo))
    custom_config = _write_config(tmp_path / "custom", source=source, model_type="my-rm",
                                  auto_map={"AutoConfig": "configuration_my.MyConfig"})  # fmt: skip
    with pytest.raises(UserError, match=r"its config needs the model's own code: .* --trust_remote_code true"):
        check_reward(RewardSpec(custom_config))
    policy = _write_config(tmp_path / "policy", source=source, architectures=["LlamaForCausalLM"])
    with pytest.raises(UserError, match=r"is a LlamaForCausalLM, not a sequence classifier"):
        check_reward(RewardSpec(policy))


# ------------------------------------------------------------------------------------------------ pairwise


def test_win_probabilities_and_win_rates_by_hand():
    logits = [[0.0, 2.0, 0.0], [-1.0, 0.0, 1.0], [0.5, 0.0, 0.0]]
    p = win_probabilities(logits)
    # p(0 > 1) = (sigmoid(2) + 1 - sigmoid(-1)) / 2 = (0.880797 + 0.731059) / 2
    assert p[0][1] == pytest.approx((0.8807970779778823 + 0.7310585786300049) / 2)
    assert p[0][2] == pytest.approx((0.5 + 1 - sigmoid(0.5)) / 2)
    for a in range(3):
        for b in range(3):
            assert p[a][b] + p[b][a] == pytest.approx(1.0)
    assert win_rates(p) == pytest.approx([(p[0][1] + p[0][2]) / 2, (p[1][0] + p[1][2]) / 2, (p[2][0] + p[2][1]) / 2])
    assert sum(win_rates(p)) == pytest.approx(3 / 2)  # each pair shares one win
    assert win_rates([[0.5]]) == [0.5] and sigmoid(-1000.0) == 0.0


def test_comparison_text_fills_placeholders_once():
    text = comparison_text("Q: {prompt} | A: {response_a} | B: {response_b} | {other}", "hi", "{response_b}", "b")
    assert text == "Q: hi | A: {response_b} | B: b | {other}"
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert comparison_text("{prompt}", chat, "", "") == "System: S\n\nUser: U"


def test_pairwise_ranks_the_answer_the_classifier_prefers(models, monkeypatch):
    """A classifier whose logit the test sets: l(a, b) = q(a) - q(b) + 0.7 (a bias toward the answer shown first)."""
    quality = {"good": 2.0, "fine": 0.5, "poor": -1.0}
    spec = RewardSpec(models.one, mode="pairwise", pairwise_template="plain:{prompt}|A={response_a}|B={response_b}|")
    scorer = load_reward(spec, device="cpu")
    tokenizer, seen = scorer.runner.tokenizer, []

    def judge(input_ids, attention_mask, **kwargs):
        texts = [
            tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
            for ids, mask in zip(input_ids, attention_mask, strict=True)
        ]
        seen.extend(texts)
        pairs = [re.fullmatch(r".*\|A=(\w+)\|B=(\w+)\|", t).groups() for t in texts]
        return SimpleNamespace(logits=torch.tensor([[quality[a] - quality[b] + 0.7] for a, b in pairs]))

    monkeypatch.setattr(scorer.runner.model, "forward", judge)
    answers = ["poor", "good", "fine"]
    scores = scorer.score(["Q", "R"], [answers, ["fine"]])
    logits = [[quality[a] - quality[b] + 0.7 for b in answers] for a in answers]
    assert scores[0] == pytest.approx(win_rates(win_probabilities(logits)))
    assert max(range(3), key=scores[0].__getitem__) == 1 and min(range(3), key=scores[0].__getitem__) == 0
    assert scores[1] == [0.5]  # a lone answer: nothing to compare
    assert sorted(seen) == sorted(f"Q|A={a}|B={b}|" for a in answers for b in answers if a != b)  # 6 ordered pairs


def test_pairwise_default_template_runs_through_the_chat_template(models):
    scorer = load_reward(RewardSpec(models.one, mode="pairwise", batch_size=4), device="cpu")
    scores = scorer.score(PROMPTS[:2], SAMPLES[:2])
    for row in scores:
        assert all(0 < s < 1 for s in row) and sum(row) == pytest.approx(len(row) / 2)


# ------------------------------------------------------------------------------------------------ remote code

ARMO_CODE = '''
"""An ArmoRM-shaped reward model (RLHFlow/ArmoRM-Llama3-8B-v0.1, modeling_custom.py): its own class, found through
auto_map, reading the token before the first pad (right padding) and returning .score (and logits = score), 1-D."""
from dataclasses import dataclass

import torch
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.utils import ModelOutput


@dataclass
class CustomOutput(ModelOutput):
    rewards: torch.FloatTensor | None = None
    score: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class LlamaForRewardModelWithGating(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.regression_layer = torch.nn.Linear(config.hidden_size, 4, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = (torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1) % input_ids.shape[-1]
        rewards = self.regression_layer(hidden[torch.arange(len(input_ids)), last])
        score = rewards @ torch.tensor([0.1, 0.2, 0.3, 0.4])
        return CustomOutput(rewards=rewards, score=score, logits=score)
'''


@pytest.fixture(scope="module")
def armo_model(tmp_path_factory) -> str:
    import importlib.util

    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("armo")
    (folder / "modeling_custom.py").write_text(ARMO_CODE)
    spec = importlib.util.spec_from_file_location("armo_modeling_custom", folder / "modeling_custom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = build_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=512, pad_token_id=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        auto_map={"AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"},
    )  # fmt: skip
    torch.manual_seed(3)
    module.LlamaForRewardModelWithGating(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_an_armo_shaped_remote_code_model_scores_by_its_score(armo_model, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with pytest.raises(UserError, match=r"brings its own classifier code .* pass --trust_remote_code true$"):
        check_reward(RewardSpec(armo_model, reward_index="score"))
    spec = RewardSpec(armo_model, reward_index="score", trust_remote_code=True, batch_size=2)
    assert check_reward(spec).endswith("reading .score)")
    scores = load_reward(spec, device="cpu").score(PROMPTS, SAMPLES)
    # the reference: ArmoRM's own usage, one unpadded conversation per forward
    tokenizer = AutoTokenizer.from_pretrained(armo_model)
    model = AutoModelForSequenceClassification.from_pretrained(armo_model, trust_remote_code=True).eval()
    for prompt, answers, got in zip(PROMPTS, SAMPLES, scores, strict=True):
        for answer, value in zip(answers, got, strict=True):
            text = tokenizer.apply_chat_template(_conversation(prompt, answer), tokenize=False)
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            with torch.no_grad():
                assert value == pytest.approx(model(ids).score.item(), abs=1e-5)
    # and through the command
    from amapo.cli import main

    out = tmp_path / "pairs.jsonl"
    argv = ["make-pairs", "--model_name_or_path", "builtin:tiny-llama", "--prompts", "builtin:reverse",
            "--prompts_split", "train[:4]", "--num_samples", "3", "--max_new_tokens", "8", "--temperature", "1.0",
            "--reward", armo_model, "--reward_index", "score", "--output", str(out)]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().endswith("pass --trust_remote_code true")
    assert main([*argv, "--trust_remote_code", "true"]) == 0
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert pairs and all(p["score_chosen"] > p["score_rejected"] for p in pairs)
