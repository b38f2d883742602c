"""Rows in the published schemas of the paper's ranking benchmarks, made by the tests (nothing downloaded)."""

from __future__ import annotations

WORDS = ["stone", "river", "apple", "cloud", "tiger", "lemon", "piano", "grape", "melon", "chair"]
DOMAINS = ["chat", "math", "code", "safety-refuse", "safety-response"]


def rm_bench_rows(n: int = 10, domains=DOMAINS) -> list[dict]:
    """Rows in RM-Bench's published schema (data/total_dataset.json): a right and a subtly wrong reversal, each in
    the concise, detailed-plain and detailed-markdown style."""
    rows = []
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        good, bad = word[::-1], word[::-1][1:] + word[-1]
        rows.append(
            {
                "id": i,
                "prompt": f"reverse {word}",
                "chosen": [good, f"It is {good}.", f"**{good}**"],  # short: no pair is truncated
                "rejected": [bad, f"It is {bad}.", f"**{bad}**"],
                "domain": domains[i % len(domains)],
            }
        )
    return rows


def scored_rows(n: int = 6) -> list[dict]:
    """Rows in the schema of rm-robustness/ultrafeedback-valid-* as RM-Robustness's run_kendall.py reads them."""
    rows = []
    for i in range(n):
        word = WORDS[i]
        answers = [word[::-1], word[::-1][:-1], word, word[1:]]
        rows.append(
            {
                "instruction": f"reverse {word}",
                **{f"response_{k + 1}_text": a for k, a in enumerate(answers)},
                "all_scores": [4.0, 3.0, 2.0, 1.0] if i else [4.0, 4.0, 4.0, 4.0],  # row 0: all tied
            }
        )
    return rows
