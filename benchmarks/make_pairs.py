"""``amapo make-pairs``'s two costs, side by side in one run: sampling answers and scoring them.

Sampling: ``num_prompts`` prompts x ``num_samples`` answers of exactly ``max_new_tokens`` tokens (the stop token is
one the model cannot produce, so every method generates the same number of tokens) from a random-init Llama
(``prefstep``'s shape and word tokenizer), by

* ``amapo``: ``amapo.onpolicy.sampling.sample_with_transformers``, ``--batch_size`` sequences per ``generate`` call,
  one vectorized draw per step whose numbers come from (seed, prompt, answer, step) (so answers do not depend on
  batching or resuming; ``amapo.model.generate.CounterSampler``);
* ``amapo-per-row``: the same calls with the sampler amapo had before issue 28 (one ``torch.Generator`` per answer,
  one ``multinomial`` per row per token; kept here, as ``PerRowSampler``, only to measure against);
* ``hf-batched``: ``model.generate(do_sample=True, num_return_sequences=K)`` over the same batches of prompts, one
  global random stream: the fastest plain ``transformers`` sampling, without per-answer seeds;
* ``hf-loop``: one ``model.generate(num_return_sequences=K)`` call per prompt, the plain loop of a script.

Scoring: every (prompt, answer) of the sampled set by a random-init ``LlamaForSequenceClassification`` of the same
shape, by ``amapo`` (``PointwiseScorer``, ``--reward_batch_size`` texts per forward) and by SimPO's loop (one
``apply_chat_template`` + forward per answer, on_policy_data_gen/reward_model_annotate.py).

Each method runs ``--rounds`` times in rotating order after one warm-up; medians are reported, and ratios to the
plain loop. Results: ``benchmarks/results/<device>-make-pairs.json`` (or ``--out``) and a table on stdout.

    python benchmarks/make_pairs.py [--num_prompts 16] [--num_samples 5] [--max_new_tokens 32] [--rounds 3]
    python benchmarks/make_pairs.py --device cuda --sampling_only   # the GPU check's run (benchmarks/gpu_check.py)

On a GPU the model is bf16 and ``amapo`` decodes as ``--decoding auto`` does there (a static KV cache, compiled).
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
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()  # generate returns before a GPU has finished
    return time.perf_counter() - start, out


class PerRowSampler:
    """amapo's sampler before issue 28, for comparison only: per row, temperature and nucleus filtering as now,
    then one ``torch.multinomial`` with the row's own generator (a Python loop over the batch every token)."""

    def __init__(self, seeds, temperature: float, top_p: float) -> None:
        from transformers import TopPLogitsWarper

        self.seeds, self.temperature = seeds, temperature
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None
        self.generators = None

    def __call__(self, input_ids, scores):
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        logits = scores / self.temperature
        if self.top_p is not None:
            logits = self.top_p(input_ids, logits)
        probabilities = logits.float().softmax(dim=-1)
        drawn = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            token = torch.multinomial(probabilities[row], 1, generator=self.generators[row])
            drawn[row, token] = 0.0
        return drawn


def sampling_methods(model, tokenizer, prompts, a, never: int):
    from transformers import LogitsProcessorList

    from amapo.model.generate import render_prompt
    from amapo.onpolicy.sampling import SamplingSettings, answer_seed, sample_with_transformers

    settings = SamplingSettings(a.num_samples, a.temperature, a.top_p, a.max_new_tokens, seed=1)
    indexed = list(enumerate(prompts))
    per_call = max(1, a.batch_size // a.num_samples)  # prompts per call, so every method fills batches alike
    tokenizer.padding_side = "left"

    device = next(model.parameters()).device

    def hf(batch_prompts):
        texts = [render_prompt(tokenizer, p)[0] for p in batch_prompts]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        return model.generate(
            **batch, do_sample=True, temperature=a.temperature, top_p=a.top_p, top_k=None,
            num_return_sequences=a.num_samples, max_new_tokens=a.max_new_tokens, eos_token_id=never,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip

    def per_row():  # the calls of sample_with_transformers, with the sampler of before issue 28
        rows = [(i, p, j) for i, p in indexed for j in range(a.num_samples)]
        for start in range(0, len(rows), a.batch_size):
            batch_rows = rows[start : start + a.batch_size]
            texts = [render_prompt(tokenizer, p)[0] for _, p, _ in batch_rows]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            sampler = PerRowSampler([answer_seed(1, i, j) for i, _, j in batch_rows], a.temperature, a.top_p)
            model.generate(**batch, do_sample=False, logits_processor=LogitsProcessorList([sampler]),
                           max_new_tokens=a.max_new_tokens, eos_token_id=never, pad_token_id=tokenizer.pad_token_id,
                           temperature=1.0, top_p=1.0, top_k=None)  # fmt: skip

    return {
        "amapo": lambda: sample_with_transformers(model, tokenizer, indexed, settings, a.batch_size, [never]),
        "amapo-per-row": per_row,
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
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--sampling_only", action="store_true", help="skip the reward scoring")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default results/DEVICE-make-pairs.json)")
    a = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(torch.get_num_threads())
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as work:
        policy_dir, reward_dir = Path(work) / "policy", Path(work) / "reward"
        tokenizer = build_tokenizer(a.vocab, policy_dir)
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(str(policy_dir))
        shape = build_model(a.vocab, policy_dir, seed=0, max_len=a.prompt_words + a.max_new_tokens, cuda=False)
        from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForSequenceClassification

        model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=dtype).to(a.device).eval()
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
        scoring = {} if a.sampling_only else measure(scoring_methods(reward_dir, prompts, answers, a), a.rounds)
    tokens = a.num_prompts * a.num_samples * a.max_new_tokens
    texts = a.num_prompts * a.num_samples
    result = {
        "command": " ".join(sys.argv),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu",
        "model": shape,
        "threads": torch.get_num_threads(),
        "sampling_seconds": sampling,
        "sampling_tokens_per_s": {n: tokens / s for n, s in sampling.items()},
        "scoring_seconds": scoring,
        "scoring_pairs_per_s": {n: texts / s for n, s in scoring.items()},
    }
    out = a.out or RESULTS / f"{a.device}-make-pairs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nsampling: {a.num_prompts} prompts x {a.num_samples} answers x {a.max_new_tokens} tokens (medians of "
          f"{a.rounds})\n\n| method | generated tokens/s | vs hf-batched | vs hf-loop |")  # fmt: skip
    print("|---|---|---|---|")
    for name, rate in result["sampling_tokens_per_s"].items():
        rates = result["sampling_tokens_per_s"]
        print(f"| {name} | {rate:.0f} | {rate / rates['hf-batched']:.2f}x | {rate / rates['hf-loop']:.2f}x |")
    if not scoring:
        return
    print(f"\nscoring: {texts} (prompt, answer) pairs\n\n| method | pairs scored/s | vs simpo-loop |\n|---|---|---|")
    for name, rate in result["scoring_pairs_per_s"].items():
        print(f"| {name} | {rate:.1f} | {rate / result['scoring_pairs_per_s']['simpo-loop']:.2f}x |")


if __name__ == "__main__":
    main()
