"""What a reward is: ``RewardSpec``, the values its fields take, their command-line names (``FLAG``), and the
``RewardScorer`` protocol that every scorer follows.

Fields: ``source`` picks the reward (``builtin:reverse``: ``amapo.onpolicy.rewards.builtin``; else a reward
model); ``mode`` how the model reads the answers (``pointwise``: ``amapo.onpolicy.rewards.classifier``;
``pairwise``: ``amapo.onpolicy.rewards.pairwise``, with ``pairwise_template``); ``reward_index`` which output
it reads (an output number, or ``SCORE``); ``trust_remote_code`` whether the model's own code may run
(``amapo.onpolicy.rewards.checks``); ``chat_template`` the Jinja text it renders with; ``batch_size`` and
``max_length`` how many texts it reads at once and how many tokens of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

REWARD_EXAMPLE = (
    "builtin:reverse (the built-in task's true reward), a local reward-model folder, or a Hub id of a sequence "
    "classifier such as Skywork/Skywork-Reward-Llama-3.1-8B-v0.2"
)
BUILTIN_REWARDS = ("builtin:reverse",)
MODES = ("pointwise", "pairwise")
SCORE = "score"  # reward_index for a model whose forward returns ``.score`` (ArmoRM)
PLAIN = "plain:"  # pairwise_template prefix: tokenize the comparison text as is, no chat template
PLACEHOLDERS = ("{prompt}", "{response_a}", "{response_b}")
# The command-line names of the spec's fields (amapo make-pairs), for error messages.
FLAG = {
    "source": "--reward",
    "mode": "--reward_mode",
    "reward_index": "--reward_index",
    "trust_remote_code": "--trust_remote_code",
    "chat_template": "--reward_chat_template",
    "pairwise_template": "--pairwise_template",
    "batch_size": "--reward_batch_size",
    "max_length": "--reward_max_length",
}


@dataclass(frozen=True)
class RewardSpec:
    """Which reward scores the answers, and how (fields documented in the module docstring)."""

    source: str  # "builtin:reverse", a local folder, or a Hub id of a reward model
    mode: str = "pointwise"  # or "pairwise"
    reward_index: str | None = None  # "0".."N-1", or "score"; None for a one-output model
    trust_remote_code: bool = False
    chat_template: str | None = None  # Jinja text in place of the reward tokenizer's own
    pairwise_template: str | None = None  # comparison text with {prompt}, {response_a}, {response_b}; "plain:..."
    batch_size: int = 16
    max_length: int = 4096


class RewardScorer(Protocol):
    def score(self, prompts: list, samples: list[list[str]]) -> list[list[float]]:
        """prompts[i]: a string or the chat messages before the answer; samples[i]: its K answers; one float each."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


def _check_shapes(prompts: list, samples: list[list[str]]) -> None:
    if len(prompts) != len(samples):
        raise ValueError(f"{len(prompts)} prompts but {len(samples)} lists of answers")
