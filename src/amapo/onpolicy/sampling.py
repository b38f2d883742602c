"""K answers per prompt from the policy: ``transformers`` ``generate`` (batched, left-padded), or vLLM when it is
installed and a GPU is present.

vLLM samples in a child process of its own (``sample_in_vllm_process``), for three reasons: the policy is then
never also loaded by ``transformers`` (vLLM reserves most of the GPU's free memory when it starts); the child's
exit frees all of vLLM's GPU memory before the reward model loads (vLLM has no reliable way to free it in the same
process); and under ``accelerate launch`` each child sees only its own process's GPU (``CUDA_VISIBLE_DEVICES``),
where vLLM would otherwise start every engine on the first GPU.

Every answer has its own random stream: answer j of prompt i is drawn with a generator seeded by
``answer_seed(seed, i, j)`` (a hash of the three), so an answer does not depend on the batch it was drawn in, on
the number of processes, or on a run being resumed: the same command gives the same answers. (vLLM draws with
its own sampler, seeded per prompt: reproducible with vLLM, but not the same tokens as ``transformers``.)
Defaults are SimPO's on_policy_data_gen/decode.py: temperature 0.8, top_p 0.95. Each answer says whether it
ended by itself or was cut at ``max_new_tokens`` (``selection`` never pairs a cut answer).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amapo.errors import UserError
from amapo.seeds import stream_seed

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from amapo.model.generate import Answer
    from amapo.onpolicy.shards import ShardStore

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
    return stream_seed("amapo-make-pairs", seed, prompt_index, sample)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_engine(engine: str) -> str:
    """``auto``: vLLM when it is installed and a GPU is present, else ``transformers``; ``vllm`` needs vLLM."""
    if engine == "auto":
        import torch

        return "vllm" if vllm_installed() and torch.cuda.is_available() else "transformers"
    if engine == "vllm" and not vllm_installed():
        raise UserError(
            "--engine vllm: vLLM is not installed; pip install 'amapo[vllm]' (it needs a GPU), or use --engine "
            "transformers"
        )
    return engine


def policy_stop_ids(policy_path: str, tokenizer) -> list[int]:
    """``stop_token_ids`` of the policy without loading its weights: its generation_config.json, else the
    generation settings transformers derives from its config.json."""
    from types import SimpleNamespace

    from transformers import AutoConfig, GenerationConfig

    from amapo.model.generate import stop_token_ids

    try:
        generation = GenerationConfig.from_pretrained(policy_path)
    except OSError:  # no generation_config.json
        generation = GenerationConfig.from_model_config(AutoConfig.from_pretrained(policy_path))
    return stop_token_ids(SimpleNamespace(generation_config=generation), tokenizer)


def gpu_of_local_rank(local_rank: int, visible: str | None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` that leaves a process only its own GPU: the ``local_rank``-th of those visible
    (all GPUs when ``visible`` is unset)."""
    devices = [d.strip() for d in visible.split(",")] if visible else []
    if not devices:
        return str(local_rank)
    if local_rank >= len(devices):
        raise UserError(
            f"process {local_rank} of this machine has no GPU of its own (CUDA_VISIBLE_DEVICES={visible}): launch "
            "at most one process per GPU for --engine vllm"
        )
    return devices[local_rank]


def sample_with_transformers(
    model,
    tokenizer,
    prompts: list[tuple[int, Any]],
    settings: SamplingSettings,
    batch_size: int,
    stop_ids: list[int],
    decoding: str = "auto",
) -> list[list[Answer]]:
    """``settings.num_samples`` answers to each (index, prompt), ``batch_size`` sequences per ``generate`` call;
    ``decoding``: the KV cache (``amapo.model.generate.cache_options``)."""
    from amapo.model.generate import generate_answers, render_prompt

    rows = [(i, p, j) for i, p in prompts for j in range(settings.num_samples)]
    answers: list[Answer] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        rendered = [render_prompt(tokenizer, prompt) for _, prompt, _ in batch]
        answers += generate_answers(
            model,
            tokenizer,
            [text for text, _ in rendered],
            seeds=[answer_seed(settings.seed, i, j) for i, _, j in batch],
            decoding=decoding,
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
    chat template's BOS is not doubled by vLLM's tokenizer. The K answers of prompt i come from one request with
    ``n = K`` and vLLM's seed ``answer_seed(seed, i, 0)``: reproducible, whatever the batch."""

    def __init__(self, model_path: str, tokenizer, settings: SamplingSettings, stop_ids: list[int]) -> None:
        from vllm import LLM

        self.llm = LLM(model=model_path, seed=settings.seed, dtype="auto")
        self.tokenizer, self.settings, self.stop_ids = tokenizer, settings, stop_ids

    def sample(self, prompts: list[tuple[int, Any]]) -> list[list[Answer]]:
        from vllm import SamplingParams

        from amapo.model.generate import Answer, render_prompt

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


@dataclass(frozen=True)
class VllmJob:
    """What the vLLM child process needs (picklable): the prompts to answer, where their shards go, and the GPUs it
    may see (``CUDA_VISIBLE_DEVICES``; None: as this process)."""

    policy_path: str
    chat_template: str | None
    settings: SamplingSettings
    prompts: list[tuple[int, Any]]
    output: str
    rank: int
    prompts_per_shard: int
    show_progress: bool
    visible_devices: str | None = None


def sample_in_vllm_process(job: VllmJob) -> None:
    """Run ``vllm_sample_shards(job)`` in a spawned child process (see the module docstring). A child that fails
    has printed its traceback; this raises a RuntimeError naming its exit code."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=vllm_sample_shards, args=(job,))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"vLLM sampling failed in its process (exit code {child.exitcode}); its error is above")


def vllm_sample_shards(job: VllmJob) -> None:
    """The child process: a vLLM engine answers ``job.prompts``, one samples shard per ``prompts_per_shard``."""
    if job.visible_devices is not None:  # before anything here starts CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = job.visible_devices
    from rich.console import Console

    from amapo.model.loading import load_tokenizer
    from amapo.onpolicy.shards import ShardStore

    tokenizer = load_tokenizer(job.policy_path, chat_template=job.chat_template)
    sampler = VllmSampler(job.policy_path, tokenizer, job.settings, policy_stop_ids(job.policy_path, tokenizer))
    write_sample_shards(job.prompts, sampler.sample, ShardStore(Path(job.output)), job.rank, job.prompts_per_shard,
                        Console(), "sampling (vLLM)", show_progress=job.show_progress)  # fmt: skip


def write_sample_shards(
    prompts: list[tuple[int, Any]],
    sample: Callable[[list[tuple[int, Any]]], list[list[Answer]]],
    store: ShardStore,
    rank: int,
    prompts_per_shard: int,
    console: Console,
    label: str,
    show_progress: bool,
) -> None:
    """``sample`` the (index, prompt)s ``prompts_per_shard`` at a time, each batch written whole as one samples shard
    of rows {index, prompt, samples, finished}, under a progress bar."""
    from amapo.console import progress_bar
    from amapo.onpolicy.shards import SAMPLES

    with progress_bar(console, "prompts", disable=not show_progress) as progress:
        task = progress.add_task(label, total=len(prompts))
        for start in range(0, len(prompts), prompts_per_shard):
            chunk = prompts[start : start + prompts_per_shard]
            rows = [
                {"index": i, "prompt": p, "samples": [a.text for a in got], "finished": [a.finished for a in got]}
                for (i, p), got in zip(chunk, sample(chunk), strict=True)
            ]
            store.write(SAMPLES, rank, rows)
            progress.advance(task, len(chunk))
