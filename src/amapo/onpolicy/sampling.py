"""K answers per prompt from the policy: ``transformers`` ``generate`` (batched, left-padded), or vLLM when it is
installed and a GPU is present.

Every answer has its own random stream: answer j of prompt i is drawn with a generator seeded by
``answer_seed(seed, i, j)`` (a hash of the three), so an answer does not depend on the batch it was drawn in, on
the number of processes, or on a run being resumed: the same command gives the same answers. (vLLM draws with
its own sampler, seeded per prompt: reproducible with vLLM, but not the same tokens as ``transformers``.)
Defaults are SimPO's on_policy_data_gen/decode.py: temperature 0.8, top_p 0.95. Each answer says whether it
ended by itself or was cut at ``max_new_tokens`` (``selection`` never pairs a cut answer).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amapo.model.generate import Answer

ENGINES = ("auto", "transformers", "vllm")


@dataclass(frozen=True)
class SamplingSettings:
    num_samples: int = 5
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 42


def answer_seed(seed: int, prompt_index: int, sample: int) -> int:
    """A 63-bit seed for answer ``sample`` of prompt ``prompt_index``: distinct streams for every (seed, i, j)."""
    digest = hashlib.sha256(f"amapo-make-pairs/{seed}/{prompt_index}/{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def vllm_usable() -> bool:
    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def pick_engine(engine: str) -> str:
    if engine == "auto":
        return "vllm" if vllm_usable() else "transformers"
    return engine


def sample_with_transformers(
    model, tokenizer, prompts: list[tuple[int, Any]], settings: SamplingSettings, batch_size: int, stop_ids: list[int]
) -> list[list[Answer]]:
    """``settings.num_samples`` answers to each (index, prompt), ``batch_size`` sequences per ``generate`` call."""
    from amapo.model.generate import generate_answers, render_prompt, row_generators

    device = next(model.parameters()).device
    rows = [(i, p, j) for i, p in prompts for j in range(settings.num_samples)]
    answers: list[Answer] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        rendered = [render_prompt(tokenizer, prompt) for _, prompt, _ in batch]
        answers += generate_answers(
            model,
            tokenizer,
            [text for text, _ in rendered],
            generators=row_generators([answer_seed(settings.seed, i, j) for i, _, j in batch], device),
            temperatures=[settings.temperature] * len(batch),
            max_new_tokens=settings.max_new_tokens,
            top_p=settings.top_p,
            stop_ids=stop_ids,
            templated=rendered[0][1],
        )
    k = settings.num_samples
    return [answers[n * k : (n + 1) * k] for n in range(len(prompts))]


class VllmSampler:
    """The policy in a vLLM engine (one GPU per process); prompts go in as token ids of our own rendering, so the
    chat template's BOS is not doubled by vLLM's tokenizer."""

    def __init__(self, model_path: str, tokenizer, settings: SamplingSettings, stop_ids: list[int]) -> None:
        from vllm import LLM

        self.llm = LLM(model=model_path, seed=settings.seed, dtype="auto")
        self.tokenizer, self.settings, self.stop_ids = tokenizer, settings, stop_ids

    def sample(self, prompts: list[tuple[int, Any]]) -> list[list[Answer]]:
        from vllm import SamplingParams

        from amapo.model.generate import render_prompt

        requests, params = [], []
        for index, prompt in prompts:
            text, templated = render_prompt(self.tokenizer, prompt)
            ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
            requests.append({"prompt_token_ids": ids})
            params.append(
                SamplingParams(
                    n=self.settings.num_samples,
                    temperature=self.settings.temperature,
                    top_p=self.settings.top_p,
                    max_tokens=self.settings.max_new_tokens,
                    seed=answer_seed(self.settings.seed, index, 0),
                    stop_token_ids=self.stop_ids,
                )
            )
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [
            [Answer(c.text.strip(), finished=c.finish_reason == "stop") for c in output.outputs] for output in outputs
        ]
