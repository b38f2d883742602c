"""Sampling with one vectorized step per token (issue 28): the numbers each row draws come from (its seed, the step)
alone, so answers do not depend on the batch; the draw itself is exact (greedy at temperature 0, the smallest
nucleus over top_p, the target distribution's frequencies)."""

from __future__ import annotations

import math

import pytest
import torch

from amapo.model.generate import draw, splitmix64, uniforms
from amapo.seeds import stream_seed

MASK = (1 << 64) - 1


def reference_splitmix64(x: int) -> int:
    """Vigna's splitmix64 on Python integers (unbounded, masked to 64 bits)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def test_the_tensor_hash_is_splitmix64():
    values = [0, 1, 2, 12345678901234567, (1 << 63) - 1, 42 << 40]
    got = splitmix64(torch.tensor(values, dtype=torch.int64)).tolist()
    assert [g & MASK for g in got] == [reference_splitmix64(v) for v in values]


def test_uniforms_depend_on_seed_and_step_only():
    seeds = torch.tensor([stream_seed(7, i) for i in range(1000)], dtype=torch.int64)
    u = uniforms(seeds, 3)
    assert u.dtype == torch.float64 and bool(((u >= 0) & (u < 1)).all())
    assert len(set(u.tolist())) == 1000  # distinct per seed
    assert torch.equal(uniforms(seeds[10:20], 3), u[10:20])  # a row's number: not its batch
    assert not torch.equal(uniforms(seeds, 4), u)  # nor the same at the next step
    assert abs(u.mean().item() - 0.5) < 0.03 and abs(u.var().item() - 1 / 12) < 0.01


def test_stream_seeds_are_distinct_per_key():
    seeds = {stream_seed(0, i, j) for i in range(50) for j in range(5)}
    assert len(seeds) == 250 and all(0 <= s < 2**63 for s in seeds)
    assert stream_seed(1, 2) != stream_seed(12) and stream_seed(3, 0) != stream_seed(3, 1)


PROBABILITIES = torch.tensor([0.5, 0.3, 0.15, 0.05])
LOGITS = PROBABILITIES.log()[None]


def drawn(uniform: float, top_p: float = 1.0, temperature: float = 1.0) -> int:
    return int(draw(LOGITS, torch.tensor([temperature]), top_p, torch.tensor([uniform], dtype=torch.float64)))


def test_temperature_zero_is_greedy_and_the_draw_inverts_the_cdf():
    assert {drawn(u, temperature=0.0) for u in (0.0, 0.3, 0.99)} == {0}
    # cumulative 0.5, 0.8, 0.95, 1.0: the first token whose cumulative probability exceeds u
    assert [drawn(u) for u in (0.0, 0.49, 0.51, 0.79, 0.81, 0.94, 0.96, 0.999)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_top_p_keeps_exactly_the_smallest_set_over_p():
    # top_p 0.75: {0.5, 0.3} (0.5 alone is short of it); renormalized 0.625 / 0.375
    assert [drawn(u, top_p=0.75) for u in (0.0, 0.62, 0.63, 0.999)] == [0, 0, 1, 1]
    assert {drawn(u, top_p=0.5) for u in (0.0, 0.5, 0.999)} == {0}  # 0.5 reaches 0.5: the one token
    assert {drawn(u, top_p=0.9) for u in (0.0, 0.999)} == {0, 2}  # three tokens, the fourth never


@pytest.mark.parametrize("top_p,expected", [(1.0, [0.5, 0.3, 0.15, 0.05]), (0.75, [0.625, 0.375, 0.0, 0.0])])
def test_draw_frequencies_match_the_distribution(top_p, expected):
    """20,000 rows, each with its own seed, one step: the counts against the target, Pearson's chi-square below
    its 0.1% critical value (fixed seeds: the statistic is a fixed number, the test cannot flake)."""
    n = 20_000
    seeds = torch.tensor([stream_seed(2026, i) for i in range(n)], dtype=torch.int64)
    tokens = draw(LOGITS.expand(n, -1), torch.ones(n), top_p, uniforms(seeds, 0))
    counts = torch.bincount(tokens, minlength=4).tolist()
    support = [i for i, p in enumerate(expected) if p > 0]
    assert all(counts[i] == 0 for i in range(4) if i not in support)
    chi2 = sum((counts[i] - n * expected[i]) ** 2 / (n * expected[i]) for i in support)
    critical = {1: 10.83, 3: 16.27}[len(support) - 1]
    assert chi2 < critical, (counts, chi2)
    assert math.isclose(sum(counts), n)


@pytest.fixture(scope="module")
def builtin_policy():
    from amapo.builtin import resolve_source
    from amapo.model.loading import load_model, load_tokenizer

    path = resolve_source("builtin:tiny-llama")
    return load_model(path).eval(), load_tokenizer(path)


def test_answers_do_not_depend_on_the_batch_size(builtin_policy):
    """Answer j of prompt i depends on (seed, i, j) only: the same with 1, 7 or 32 sequences per generate call."""
    from amapo.onpolicy.sampling import SamplingSettings, sample_with_transformers

    model, tokenizer = builtin_policy
    prompts = [(i, f"reverse: {word} =") for i, word in enumerate(["abc", "hello", "x", "sampling", "amapo", "ok"])]
    settings = SamplingSettings(num_samples=4, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=3)

    def texts(batch_size: int) -> list[list[str]]:
        rows = sample_with_transformers(model, tokenizer, prompts, settings, batch_size, [2])
        return [[answer.text for answer in row] for row in rows]

    by_size = {size: texts(size) for size in (1, 7, 32)}
    assert by_size[1] == by_size[7] == by_size[32]
    assert len({a for row in by_size[1] for a in row}) > 6  # and they are samples, not one answer repeated
    alone = sample_with_transformers(model, tokenizer, prompts[3:4], settings, 32, [2])
    assert [a.text for a in alone[0]] == by_size[1][3]  # nor on the other prompts
