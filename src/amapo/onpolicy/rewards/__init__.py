"""Rewards for on-policy pairs: one float per sampled answer, from the built-in task or a reward model.

``check_reward(spec)`` checks everything that needs no weights (before any generation); ``load_reward(spec)`` gives
a ``RewardScorer`` whose ``score(prompts, samples)`` returns one float per answer. Three kinds: the built-in
task's true reward (``builtin``), a pointwise reward model (``classifier``) and a pairwise one (``pairwise``).

* ``spec``: ``RewardSpec`` (its fields and their command-line names) and the ``RewardScorer`` protocol;
* ``checks``: ``check_reward``, everything checked before any generation, no weights loaded (ArmoRM as found);
* ``loading``: ``load_reward``, the reward model loaded (safetensors only) and its scorer built;
* ``builtin``: ``builtin:reverse``, the built-in task's true reward;
* ``classifier``: the classifier runner (tokens, batches, padding, outputs) and the pointwise scorer;
* ``pairwise``: the pairwise scorer: comparison text, win probabilities, win rates.
"""

from __future__ import annotations

from amapo.onpolicy.rewards.builtin import BuiltinReverseScorer
from amapo.onpolicy.rewards.checks import check_reward
from amapo.onpolicy.rewards.classifier import PointwiseScorer
from amapo.onpolicy.rewards.loading import load_reward
from amapo.onpolicy.rewards.pairwise import (
    PAIRWISE_TEMPLATE,
    PairwiseScorer,
    comparison_text,
    sigmoid,
    win_probabilities,
    win_rates,
)
from amapo.onpolicy.rewards.spec import (
    BUILTIN_REWARDS,
    FLAG,
    MODES,
    PLACEHOLDERS,
    PLAIN,
    REWARD_EXAMPLE,
    SCORE,
    RewardScorer,
    RewardSpec,
)

__all__ = [
    "BUILTIN_REWARDS",
    "FLAG",
    "MODES",
    "PAIRWISE_TEMPLATE",
    "PLACEHOLDERS",
    "PLAIN",
    "REWARD_EXAMPLE",
    "SCORE",
    "BuiltinReverseScorer",
    "PairwiseScorer",
    "PointwiseScorer",
    "RewardScorer",
    "RewardSpec",
    "check_reward",
    "comparison_text",
    "load_reward",
    "sigmoid",
    "win_probabilities",
    "win_rates",
]
