"""The options of ``amapo make-pairs``, declared once, with the checks that need nothing loaded (torch-free, so
``--help`` is quick)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from amapo.builtin import is_builtin, resolve_source
from amapo.errors import UserError
from amapo.model.decodings import DECODINGS
from amapo.onpolicy.prompts import PROMPT_FORMATS
from amapo.onpolicy.sampling import ENGINES
from amapo.option_checks import check_number

if TYPE_CHECKING:
    from amapo.onpolicy.rewards import RewardSpec
    from amapo.onpolicy.sampling import SamplingSettings

REWARD_MODES = ("pointwise", "pairwise")


@dataclass
class MakePairsConfig:
    model_name_or_path: str = field(
        metadata={"help": "Policy that answers: a model folder, a Hub id, builtin:tiny-llama."}
    )
    prompts: str = field(
        metadata={
            "help": "Prompt source, as `amapo train --dataset` takes it (file, folder, Hub id, builtin:reverse): a "
            "`prompt` column, preference pairs (their prompts), or conversations (`messages`)."
        }
    )
    reward: str = field(
        metadata={
            "help": "Reward: a sequence-classification reward model (folder or Hub id), or builtin:reverse (the "
            "built-in task's true reward)."
        }
    )
    output: str = field(metadata={"help": "Pairs file to write (JSON Lines, read by `amapo train --dataset`)."})
    prompts_split: str = field(default="train", metadata={"help": "Split of --prompts, sliceable: 'train[:1000]'."})
    prompt_format: str = field(
        default="auto",
        metadata={
            "help": "auto: prompts keep the form `amapo train` gives them (messages through the chat template, "
            "strings as plain text); chat: strings become a user message (SimPO's decode.py); plain: as auto."
        },
    )
    max_prompts: int | None = field(default=None, metadata={"help": "Keep the first N prompts (after deduplication)."})
    num_samples: int = field(default=5, metadata={"help": "Answers sampled per prompt (K >= 2)."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (SimPO's default 0.8)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass in (0, 1] (SimPO's default 0.95)."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Tokens per answer."})
    seed: int = field(default=42, metadata={"help": "Answer j of prompt i samples with a stream seeded (seed, i, j)."})
    engine: str = field(
        default="auto", metadata={"help": "auto (vLLM when installed and a GPU is present), transformers, vllm."}
    )
    batch_size: int = field(default=32, metadata={"help": "Sequences per generate call (prompts x samples)."})
    decoding: str = field(
        default="auto",
        metadata={
            "help": "KV cache of the transformers sampler: static (a static cache, the forward compiled on a GPU: "
            "seconds of start-up, then faster steps), dynamic, or auto (static on a GPU, dynamic on a CPU)."
        },
    )
    prompts_per_shard: int = field(default=64, metadata={"help": "Prompts per shard: a kill loses at most one."})
    chat_template: str | None = field(default=None, metadata={"help": "Policy chat template (Jinja text or file)."})
    reward_mode: str = field(default="pointwise", metadata={"help": "pointwise (one score per answer) or pairwise."})
    reward_index: str | None = field(
        default=None,
        metadata={"help": "Which output of a reward model with several: an index, or 'score' (ArmoRM's .score)."},
    )
    reward_chat_template: str | None = field(default=None, metadata={"help": "Reward model chat template override."})
    pairwise_template: str | None = field(
        default=None, metadata={"help": "Comparison text for --reward_mode pairwise."}
    )
    reward_batch_size: int = field(default=16, metadata={"help": "Answers scored per reward forward."})
    reward_max_length: int = field(default=4096, metadata={"help": "Tokens per scored text (the start is kept)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the reward model's own code (ArmoRM)."})
    keep_samples: bool = field(
        default=False, metadata={"help": "Also write every answer and score (all_generated_responses, all_rm_scores)."}
    )

    def __post_init__(self) -> None:
        choices = (("prompt_format", PROMPT_FORMATS), ("engine", ENGINES), ("reward_mode", REWARD_MODES),
                   ("decoding", DECODINGS))  # fmt: skip
        for option, values in choices:
            if getattr(self, option) not in values:
                raise UserError(f"--{option} must be one of {', '.join(values)}, got {getattr(self, option)!r}")
        for option in ("max_new_tokens", "batch_size", "prompts_per_shard", "reward_batch_size", "reward_max_length",
                       "max_prompts"):  # fmt: skip
            check_number(option, getattr(self, option), ">= 1")
        if self.num_samples < 2:
            raise UserError(f"--num_samples must be >= 2 (a pair needs two answers), got {self.num_samples}")
        check_number("temperature", self.temperature, ">= 0")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise UserError(f"--top_p must be in (0, 1], got {self.top_p}")
        if not self.output.endswith((".jsonl", ".json")):
            raise UserError(f"--output {self.output}: give a .jsonl file (the pairs, one JSON object per line)")

    def reward_spec(self) -> RewardSpec:
        from amapo.data.chat import read_chat_template
        from amapo.onpolicy.rewards import RewardSpec

        return RewardSpec(
            source=self.reward if is_builtin(self.reward) else resolve_source(self.reward),
            mode=self.reward_mode,
            reward_index=self.reward_index,
            trust_remote_code=self.trust_remote_code,
            chat_template=read_chat_template(self.reward_chat_template) if self.reward_chat_template else None,
            pairwise_template=self.pairwise_template,
            batch_size=self.reward_batch_size,
            max_length=self.reward_max_length,
        )

    def sampling(self) -> SamplingSettings:
        from amapo.onpolicy.sampling import SamplingSettings

        return SamplingSettings(self.num_samples, self.temperature, self.top_p, self.max_new_tokens, self.seed)
