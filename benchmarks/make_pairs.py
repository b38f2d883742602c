"""``amapo make-pairs``'s two costs, side by side in one run: sampling answers and scoring them.

Sampling: ``num_prompts`` prompts x ``num_samples`` answers of exactly ``max_new_tokens`` tokens (the stop token is
one the model cannot produce, so every method generates the same number of tokens) from a random-init Llama
(``prefstep``'s shape and word tokenizer), by

* ``amapo``: ``amapo.onpolicy.sampling.sample_with_transformers``, ``--batch_size`` sequences per ``generate`` call,
  one seeded random stream per answer (so answers do not depend on batching or resuming);
* ``hf-batched``: ``model.generate(do_sample=True, num_return_sequences=K)`` over the same batches of prompts, one
  global random stream: the fastest plain ``transformers`` sampling, without per-answer seeds;
* ``hf-loop``: one ``model.generate(num_return_sequences=K)`` call per prompt, the plain loop of a script.

Scoring: every (prompt, answer) of the sampled set by a random-init ``LlamaForSequenceClassification`` of the same
shape, by ``amapo`` (``PointwiseScorer``, ``--reward_batch_size`` texts per forward) and by SimPO's loop (one
``apply_chat_template`` + forward per answer, on_policy_data_gen/reward_model_annotate.py).

Each method runs ``--rounds`` times in rotating order after one warm-up; medians are reported, and ratios to the
plain loop. Results: ``benchmarks/results/<device>-make-pairs.json`` and a table on stdout.

    python benchmarks/make_pairs.py [--num_prompts 16] [--num_samples 5] [--max_new_tokens 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefstep.data import build_model, build_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def prompts_of(n: int, words: int, vocab: int) -> list[list[dict]]:
    import random

    rng = random.Random(0)
    return [[{"role": "user", "content": " ".join(f"w{rng.randrange(vocab - 4)}" for _ in range(words))}]
            for _ in range(n)]  # fmt: skip


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def sampling_methods(model, tokenizer, prompts, a, never: int):
    from amapo.model.generate import render_prompt
    from amapo.onpolicy.sampling import SamplingSettings, sample_with_transformers

    settings = SamplingSettings(a.num_samples, a.temperature, a.top_p, a.max_new_tokens, seed=1)
    indexed = list(enumerate(prompts))
    per_call = max(1, a.batch_size // a.num_samples)  # prompts per call, so every method fills batches alike
    tokenizer.padding_side = "left"

    def hf(batch_prompts):
        texts = [render_prompt(tokenizer, p)[0] for p in batch_prompts]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return model.generate(
            **batch, do_sample=True, temperature=a.temperature, top_p=a.top_p, top_k=None,
            num_return_sequences=a.num_samples, max_new_tokens=a.max_new_tokens, eos_token_id=never,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip

    return {
        "amapo": lambda: sample_with_transformers(model, tokenizer, indexed, settings, a.batch_size, [never]),
        "hf-batched": lambda: [hf(prompts[s : s + per_call]) for s in range(0, len(prompts), per_call)],
        "hf-loop": lambda: [hf([p]) for p in prompts],
    }


def scoring_methods(reward_dir: Path, prompts, answers, a):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from amapo.onpolicy.rewards import RewardSpec, load_reward

    scorer = load_reward(RewardSpec(str(reward_dir), batch_size=a.reward_batch_size), device="cpu")
    model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)

    @torch.no_grad()
    def simpo_loop():  # on_policy_data_gen/reward_model_annotate.py: one text per forward
        out = []
        for prompt, candidates in zip(prompts, answers, strict=True):
            for candidate in candidates:
                messages = [*prompt, {"role": "assistant", "content": candidate}]
                ids = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)["input_ids"]
                out.append(model(ids).logits[0, 0].item())
        return out

    return {"amapo": lambda: scorer.score(prompts, answers), "simpo-loop": simpo_loop}


def measure(methods: dict, rounds: int) -> dict[str, float]:
    """Median seconds per method over ``rounds``, the order rotating between rounds, after one warm-up each."""
    names = list(methods)
    for name in names:
        methods[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(methods[name])[0])
    return {n: statistics.median(t) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_prompts", type=int, default=16)
    parser.add_argument("--prompt_words", type=int, default=32)
    parser.add_argument("--num_samples", type=int, default=5)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_p", type=float, default=0.95)
    parser.add_argument("--batch_size", type=int, default=40)
    parser.add_argument("--reward_batch_size", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rounds", type=int, default=3)
    a = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as work:
        policy_dir, reward_dir = Path(work) / "policy", Path(work) / "reward"
        tokenizer = build_tokenizer(a.vocab, policy_dir)
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(str(policy_dir))
        shape = build_model(a.vocab, policy_dir, seed=0, max_len=a.prompt_words + a.max_new_tokens, cuda=False)
        from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForSequenceClassification

        model = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
        reward_config = LlamaConfig.from_pretrained(policy_dir, num_labels=1)
        LlamaForSequenceClassification(reward_config).save_pretrained(str(reward_dir))
        tokenizer.save_pretrained(str(reward_dir))
        prompts = prompts_of(a.num_prompts, a.prompt_words, a.vocab)
        never = a.vocab + 7  # no token of the model: every answer runs to max_new_tokens
        sampling = measure(sampling_methods(model, tokenizer, prompts, a, never), a.rounds)
        from amapo.onpolicy.sampling import SamplingSettings, sample_with_transformers

        settings = SamplingSettings(a.num_samples, a.temperature, a.top_p, a.max_new_tokens, seed=1)
        sampled = sample_with_transformers(model, tokenizer, list(enumerate(prompts)), settings, a.batch_size, [never])
        answers = [[answer.text for answer in row] for row in sampled]
        scoring = measure(scoring_methods(reward_dir, prompts, answers, a), a.rounds)
    tokens = a.num_prompts * a.num_samples * a.max_new_tokens
    texts = a.num_prompts * a.num_samples
    result = {
        "command": " ".join(sys.argv),
        "settings": vars(a),
        "model": shape,
        "threads": torch.get_num_threads(),
        "sampling_seconds": sampling,
        "sampling_tokens_per_s": {n: tokens / s for n, s in sampling.items()},
        "scoring_seconds": scoring,
        "scoring_pairs_per_s": {n: texts / s for n, s in scoring.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu-make-pairs.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nsampling: {a.num_prompts} prompts x {a.num_samples} answers x {a.max_new_tokens} tokens (medians of "
          f"{a.rounds})\n\n| method | generated tokens/s | vs hf-loop |\n|---|---|---|")  # fmt: skip
    for name, rate in result["sampling_tokens_per_s"].items():
        print(f"| {name} | {rate:.0f} | {rate / result['sampling_tokens_per_s']['hf-loop']:.2f}x |")
    print(f"\nscoring: {texts} (prompt, answer) pairs\n\n| method | pairs scored/s | vs simpo-loop |\n|---|---|---|")
    for name, rate in result["scoring_pairs_per_s"].items():
        print(f"| {name} | {rate:.1f} | {rate / result['scoring_pairs_per_s']['simpo-loop']:.2f}x |")


if __name__ == "__main__":
    main()
