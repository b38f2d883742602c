"""The pairwise scorer: every ordered pair of a prompt's answers read as one comparison text, each answer scored
by its win rate.

Pairwise (``mode="pairwise"``): a sequence classifier that reads one comparison text and outputs the log-odds
``l(a, b)`` that answer a (shown as A) beats answer b (shown as B). Every ordered pair of a prompt's K answers is
read, and (formulas below)

    p(a > b) = (sigmoid(l(a, b)) + 1 - sigmoid(l(b, a))) / 2        so p(a > b) + p(b > a) = 1
    score(a) = mean over b != a of p(a > b)                          (1 answer alone: 0.5)

Pairwise comparison text (our choice; no standard exists for classifier judges): ``PAIRWISE_TEMPLATE`` with
``{prompt}``, ``{response_a}``, ``{response_b}`` replaced (plain replacement, so other braces are text), rendered
as ONE user message through the chat template (no generation prompt). ``spec.pairwise_template`` replaces the
text; starting it with ``plain:`` (removed) skips the chat template: the text is tokenized as is, with the
tokenizer's own special tokens (BOS), as amapo tokenizes any plain prompt. ``{prompt}`` is a string prompt as is,
a single user message's content, or for longer conversations one ``Role: content`` paragraph per message.

Formulas and sources. ``sigmoid(l)``: the classifier's output is defined as log-odds (a Bradley-Terry / logistic
link). Scoring both orders against position bias: MT-Bench's judge swaps the two answers and calls a win only if
both orders agree (Zheng et al. 2023, arXiv 2306.05685, Sec. 3.4); averaging the two probabilities instead is our
choice (it keeps a graded value and makes p(a > b) + p(b > a) = 1 exactly). ``score(a)``: a soft Borda count (an
answer's mean win probability against the others; win rate), our choice, in the spirit of LLM-Blender's PairRanker
(Jiang et al. 2023, arXiv 2306.02561), which ranks N candidates from all their pairwise comparisons.
"""

from __future__ import annotations

import math
import re

from amapo.onpolicy.rewards.classifier import _check_finite, _ClassifierRunner, _render
from amapo.onpolicy.rewards.spec import PLACEHOLDERS, PLAIN, _check_shapes

PAIRWISE_TEMPLATE = (
    "Compare two responses to the conversation below.\n\n"
    "[Conversation]\n{prompt}\n\n[Response A]\n{response_a}\n\n[Response B]\n{response_b}\n\n"
    "Is Response A better than Response B?"
)
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


def _conversation_text(prompt) -> str:
    """``{prompt}`` of the comparison: a string as is, one user message's content, else 'Role: content' blocks."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0].get("role") == "user":
        return prompt[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


def comparison_text(template: str, prompt, response_a: str, response_b: str) -> str:
    """The template with its three placeholders replaced, in one pass (other braces, and placeholders inside the
    answers themselves, stay text)."""
    parts = {"{prompt}": _conversation_text(prompt), "{response_a}": response_a, "{response_b}": response_b}
    return _PLACEHOLDER.sub(lambda m: parts[m.group(0)], template)


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def win_probabilities(logits: list[list[float]]) -> list[list[float]]:
    """P[a][b] = (sigmoid(l(a, b)) + 1 - sigmoid(l(b, a))) / 2 from ``logits[a][b]`` = l(a, b), A = a shown first;
    both orders cancel position bias and P[a][b] + P[b][a] = 1 (module docstring). The diagonal is 0.5."""
    k = len(logits)
    return [
        [0.5 if a == b else (sigmoid(logits[a][b]) + 1 - sigmoid(logits[b][a])) / 2 for b in range(k)] for a in range(k)
    ]


def win_rates(probabilities: list[list[float]]) -> list[float]:
    """score(a) = mean over b != a of P[a][b] (a soft Borda count; 0.5 for a lone answer)."""
    k = len(probabilities)
    if k == 1:
        return [0.5]
    return [sum(probabilities[a][b] for b in range(k) if b != a) / (k - 1) for a in range(k)]


class PairwiseScorer:
    """Each answer's mean win probability over the others, from every ordered pair (module docstring)."""

    def __init__(self, runner: _ClassifierRunner, chat_template: str | None, pairwise_template: str | None):
        self.runner, self.chat_template = runner, chat_template
        template = pairwise_template or PAIRWISE_TEMPLATE
        self.plain = template.startswith(PLAIN)
        self.template = template.removeprefix(PLAIN)

    @property
    def truncated_rows(self) -> int:
        return self.runner.truncated_rows

    def _ids(self, prompt, response_a: str, response_b: str) -> list[int]:
        text = comparison_text(self.template, prompt, response_a, response_b)
        if self.plain:
            return self.runner.encode(text, rendered=False)
        rendered = _render(self.runner.tokenizer, [{"role": "user", "content": text}], self.chat_template, prompt)
        return self.runner.encode(rendered, rendered=True)

    def score(self, prompts: list, samples: list[list[str]]) -> list[list[float]]:
        _check_shapes(prompts, samples)
        truncated, rows, pairs = self.runner.truncated_rows, [], []  # pairs[i]: (prompt number, a, b) of rows[i]
        for p, (prompt, answers) in enumerate(zip(prompts, samples, strict=True)):
            for a, answer_a in enumerate(answers):
                for b, answer_b in enumerate(answers):
                    if a != b:
                        rows.append(self._ids(prompt, answer_a, answer_b))
                        pairs.append((p, a, b))
        logits = [[[0.0] * len(answers) for _ in answers] for answers in samples]
        for (p, a, b), value in zip(pairs, self.runner.values(rows), strict=True):
            logits[p][a][b] = value
        self.runner.warn_truncated(truncated)
        scores = [win_rates(win_probabilities(matrix)) if matrix else [] for matrix in logits]
        return _check_finite(scores, prompts, self.runner.source)

    def close(self) -> None:
        self.runner.close()
