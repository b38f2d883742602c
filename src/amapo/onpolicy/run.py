"""``amapo make-pairs``: on-policy preference pairs from a policy and a reward.

Three phases, each resumable (``amapo.onpolicy.shards``):

1. sample: K answers per prompt from the policy (``sampling``; vLLM in a child process of its own), one shard per
   batch of prompts;
2. score: every answer scored by the reward (``rewards``), once the policy is freed;
3. select and merge: the highest-scoring answer chosen, the lowest rejected (``selection``), one JSON Lines file
   that ``amapo train`` reads, written whole; then the shards are removed.

Everything the user can get wrong is checked before the policy loads: the options, the output's folder (writable),
the prompts (every row), the policy's tokenizer and chat template, the reward (its config, outputs and template),
the safetensors headers of both models (a truncated file), and an existing output's settings. Under
``accelerate launch`` every process takes every N-th prompt (its share), writes its own shards, and the first
process merges them once all are done.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from rich.console import Console

from amapo.builtin import is_builtin, resolve_source
from amapo.console import progress_bar
from amapo.errors import UserError
from amapo.files import write_atomically
from amapo.onpolicy.options import MakePairsConfig
from amapo.onpolicy.prompts import PromptSet, read_prompts
from amapo.onpolicy.rewards import check_reward, load_reward
from amapo.onpolicy.sampling import (
    VllmJob,
    choose_engine,
    gpu_of_local_rank,
    sample_in_vllm_process,
    sample_with_transformers,
    write_sample_shards,
)
from amapo.onpolicy.selection import is_valid_text, select_pairs
from amapo.onpolicy.shards import SAMPLES, SCORED, ShardStore
from amapo.option_checks import check_model_path
from amapo.output_folder import check_writable_folder
from amapo.seeds import SAMPLER


@dataclass
class Ranks:
    """This process's place among the data-parallel processes (``accelerate launch``), and a barrier."""

    rank: int = 0
    world: int = 1
    state: object = None
    local_rank: int = 0  # among the processes of this machine

    @classmethod
    def from_environment(cls) -> Ranks:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import PartialState

        state = PartialState()
        return cls(state.process_index, state.num_processes, state, state.local_process_index)

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def device(self):
        from amapo.model.loading import best_device

        return self.state.device if self.state is not None else best_device()


def settings_file(output: Path) -> Path:
    return output.with_name(output.name + ".settings.json")


def recorded_settings(config: MakePairsConfig, prompts: PromptSet, tokenizer, engine: str, reward: str) -> dict:
    """What shapes the pairs; a rerun that would continue or overwrite a run made with other values is refused."""
    import hashlib

    template = getattr(tokenizer, "chat_template", None) or ""
    return {
        "policy": config.model_name_or_path,
        "policy_chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "prompts": f"{config.prompts}@{config.prompts_split}",
        "prompt_format": config.prompt_format,
        "max_prompts": config.max_prompts,
        "prompt_count": len(prompts.prompts),
        **asdict(config.sampling()),
        "sampler": SAMPLER,  # issue 28 changed how tokens are drawn: shards sampled before are not continued
        "engine": engine,
        "reward": reward,
        "reward_mode": config.reward_mode,
        "reward_index": config.reward_index,
        "pairwise_template": config.pairwise_template,
        "keep_samples": config.keep_samples,
    }


def check_settings(output: Path, settings: dict) -> bool:
    """True when ``output`` is a finished run with these settings (nothing to do); refuses other settings."""
    path = settings_file(output)
    if not path.is_file():
        if output.exists():
            raise UserError(
                f"--output {output} exists and was not written by `amapo make-pairs` (no {path.name} beside it): give "
                "another --output, or delete it"
            )
        return False
    recorded = json.loads(path.read_text())
    changed = [k for k in settings if recorded.get(k) != settings[k]]
    if changed:
        shown = lambda value, missing: missing if value is None else repr(value)  # noqa: E731 (no None in a message)
        diffs = "; ".join(f"{k}: {shown(settings[k], 'unset')} now, {shown(recorded.get(k), 'not recorded')} then"
                          for k in changed)  # fmt: skip
        raise UserError(
            f"{output} belongs to a run with other settings ({diffs}): rerun with its settings to continue it, or "
            f"give another --output, or delete {output.name}, {path.name} and {output.name}.shards to start over"
        )
    return output.exists()


def run_make_pairs(config: MakePairsConfig, console: Console | None = None) -> Path:
    """Sample, score, select (module docstring); returns the pairs file."""
    from amapo.model.loading import check_weights, load_tokenizer

    console = console or Console()
    ranks = Ranks.from_environment()
    check_model_path("model_name_or_path", config.model_name_or_path)
    output = Path(config.output).expanduser()
    check_writable_folder(output.parent, "--output", given=output)
    reward_description = check_reward(config.reward_spec())
    if not is_builtin(config.reward):  # a reward model's weights: headers only, before the policy loads
        check_weights(resolve_source(config.reward), named=f"--reward {config.reward}")
    prompts = read_prompts(config.prompts, config.prompts_split, prompt_format=config.prompt_format,
                           max_prompts=config.max_prompts)  # fmt: skip
    policy_path = resolve_source(config.model_name_or_path)
    check_weights(policy_path, named=f"--model_name_or_path {config.model_name_or_path}")
    tokenizer = load_tokenizer(policy_path, chat_template=config.chat_template)
    if prompts.conversational and not tokenizer.chat_template:
        raise UserError(
            f"the prompts of {config.prompts} are conversations and the policy {config.model_name_or_path} has no chat "
            "template to render them: pass --chat_template (Jinja text or a .jinja file)"
        )
    engine = choose_engine(config.engine)
    # vLLM under accelerate launch: this process's own GPU (refused now if it has none, before anything loads)
    own_gpu = (
        gpu_of_local_rank(ranks.local_rank, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if engine == "vllm" and ranks.world > 1
        else None
    )
    settings = recorded_settings(config, prompts, tokenizer, engine, config.reward)
    if check_settings(output, settings):
        say(console, ranks, f"amapo make-pairs: {output} is complete for these settings: nothing to do")
        return output
    ranks.wait()  # every process has read the settings before the first writes them
    if ranks.rank == 0:
        write_atomically(settings_file(output), json.dumps(settings, indent=2) + "\n")
    store = ShardStore(output)
    say(console, ranks, f"amapo make-pairs: {len(prompts.prompts)} prompts ({prompts.duplicates} duplicates dropped) "
        f"from {config.prompts}@{config.prompts_split}; reward: {reward_description}; engine: {engine}")  # fmt: skip
    note_long_answers(config, prompts, policy_path, tokenizer, console, ranks)
    sample_share(config, prompts, store, ranks, policy_path, tokenizer, engine, own_gpu, console)
    score_share(config, prompts, store, ranks, console)
    ranks.wait()
    if ranks.rank == 0:
        merge(config, prompts, store, output, console)
    ranks.wait()
    return output


def note_long_answers(config, prompts: PromptSet, policy_path: str, tokenizer, console, ranks: Ranks) -> None:
    """A note (not an error) when the longest prompt plus --max_new_tokens passes the policy's positions: answers
    that run that long degrade, and a model that rarely stops would spend its time there."""
    from amapo.model.generate import render_prompt
    from amapo.model.loading import model_positions

    positions = model_positions(policy_path)
    if positions is None:
        return
    longest = max(len(tokenizer(render_prompt(tokenizer, p)[0])["input_ids"]) for p in prompts.prompts)
    if longest + config.max_new_tokens > positions:
        say(console, ranks, f"amapo make-pairs: note: the longest prompt ({longest} tokens) plus --max_new_tokens "
            f"{config.max_new_tokens} passes the policy's {positions} positions; lower --max_new_tokens to "
            f"{max(positions - longest, 1)} to keep every answer within them")  # fmt: skip


def say(console: Console, ranks: Ranks, text: str) -> None:
    if ranks.rank == 0:
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def sample_share(config, prompts: PromptSet, store: ShardStore, ranks: Ranks, policy_path, tokenizer, engine,
                 own_gpu: str | None, console) -> None:  # fmt: skip
    """Answers to this process's prompts that no shard holds yet, one shard per ``prompts_per_shard`` prompts;
    ``own_gpu``: the only GPU vLLM's process may see (None: those this process sees)."""
    done = store.done(SAMPLES)
    todo = [(i, p) for i, p in enumerate(prompts.prompts) if i % ranks.world == ranks.rank and i not in done]
    if not todo:
        return
    if engine == "vllm":
        job = VllmJob(policy_path, config.chat_template, config.sampling(), todo, str(store.output), ranks.rank,
                      config.prompts_per_shard, show_progress=ranks.rank == 0, visible_devices=own_gpu)  # fmt: skip
        sample_in_vllm_process(job)
        return
    from amapo.model.generate import stop_token_ids
    from amapo.model.loading import load_model

    model = load_model(policy_path, device=ranks.device()).eval()
    stop_ids = stop_token_ids(model, tokenizer)
    sample = partial(sample_with_transformers, model, tokenizer, settings=config.sampling(),
                     batch_size=config.batch_size, stop_ids=stop_ids, decoding=config.decoding)  # fmt: skip
    write_sample_shards(todo, sample, store, ranks.rank, config.prompts_per_shard, console, "sampling",
                        show_progress=ranks.rank == 0)  # fmt: skip
    del model, sample  # the policy's memory goes before the reward model loads
    free_accelerator_memory()


def score_share(config, prompts: PromptSet, store: ShardStore, ranks: Ranks, console) -> None:
    """Scores for this process's samples shards that have none yet."""
    shards = store.unscored(ranks.rank)
    if not shards:
        return
    scorer = load_reward(config.reward_spec(), device=ranks.device())
    try:
        with progress_bar(console, "prompts", disable=ranks.rank != 0) as progress:
            task = progress.add_task("scoring", total=sum(len(store.read(s)) for s in shards))
            for shard in shards:
                rows = store.read(shard)
                scores = scorer.score([r["prompt"] for r in rows], [r["samples"] for r in rows])
                store.write(SCORED, ranks.rank, [{**r, "scores": s} for r, s in zip(rows, scores, strict=True)])
                progress.advance(task, len(rows))
    finally:
        scorer.close()


def merge(config: MakePairsConfig, prompts: PromptSet, store: ShardStore, output: Path, console: Console) -> None:
    """Select a pair per prompt from every process's scored shards, write the pairs file whole, remove the shards."""
    rows = store.scored_rows()
    missing = sorted(set(range(len(prompts.prompts))) - {r["index"] for r in rows})
    if missing:  # a process died before scoring its share: a rerun continues it
        raise UserError(f"{len(missing)} prompts have no scored answers (first: {missing[0]}): rerun to finish them")
    pairs, dropped = select_pairs(rows, config.keep_samples)
    write_atomically(output, "".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs))
    store.remove()
    reasons = ", ".join(f"{n} {reason}" for reason, n in dropped.items()) or "none"
    cut = sum(not f for row in rows for f in row["finished"])
    invalid = sum(not is_valid_text(answer) for row in rows for answer in row["samples"])
    answers = sum(len(r["finished"]) for r in rows)
    reasons += f"; of {answers} answers, {cut} cut at --max_new_tokens and {invalid} not valid UTF-8, never paired"
    gaps = [p["reward_gap"] for p in pairs]
    gap = f"; reward gap mean {sum(gaps) / len(gaps):.4g}" if gaps else ""
    console.print(
        f"amapo make-pairs: {len(pairs)} pairs from {len(rows)} prompts written to {output} (prompts without a pair: "
        f"{reasons}){gap}", markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip


def free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
