"""The built-in default job's assets: a tiny Llama policy after a short SFT step, and the task's data files.

``prepare_builtin()`` writes (once, then reuses) a cache folder that looks exactly like what a user brings:

    <cache>/model/          config.json, model.safetensors, tokenizer.json, ...  (AutoModelForCausalLM loads it)
    <cache>/data/train.jsonl, in_distribution.jsonl, prompt_ood.jsonl, response_ood.jsonl, mutual_ood.jsonl
    <cache>/data/reverse-lengths/...   the same files for the reverse-lengths variant

so ``amapo train`` runs the default through the same code path as a Hub model and a local dataset file.
The cache key covers everything that shapes the assets; a change makes a new folder, never a stale reuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from amapo.builtin.task import EVAL_SETS, VARIANTS, TaskSpec, generate_task
from amapo.builtin.tokenizer import build_byte_tokenizer

ASSETS_VERSION = 2  # 2: held-out pools of TaskSpec.eval_pool pairs, the reverse-lengths variant


@dataclass(frozen=True)
class TinyModelSpec:
    """A Llama-architecture model small enough to train in seconds on 2 CPU cores (about 0.1M parameters)."""

    hidden_size: int = 64
    intermediate_size: int = 192
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 512  # room for real data (orca); the recipe still cuts at 64 for speed
    sft_steps: int = 120
    sft_batch_size: int = 32
    sft_learning_rate: float = 3e-3
    seed: int = 0


def default_cache_dir() -> Path:
    return Path(os.environ.get("AMAPO_CACHE", Path.home() / ".cache" / "amapo"))


def _cache_key(task: TaskSpec, model: TinyModelSpec) -> str:
    blob = json.dumps({"v": ASSETS_VERSION, "task": asdict(task), "model": asdict(model)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_tiny_llama(spec: TinyModelSpec, tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    return LlamaForCausalLM(config)


def supervised_warmup(model, tokenizer, examples: list[dict], spec: TinyModelSpec) -> list[float]:
    """A short SFT step: next-token loss on the completion (+ EOS) only, prompt tokens masked.

    Deliberately short: the base policy knows the task's format and some of its content, but ranks pairs
    imperfectly, so preference training has room to improve it. Returns the loss curve.
    """
    rng = random.Random(spec.seed)
    torch.manual_seed(spec.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.sft_learning_rate, weight_decay=0.0)
    encoded = []
    for ex in examples:
        prompt = tokenizer(ex["prompt"]).input_ids
        completion = [*tokenizer(ex["completion"], add_special_tokens=False).input_ids, tokenizer.eos_token_id]
        encoded.append((prompt + completion, len(prompt)))
    losses = []
    model.train()
    for step in range(spec.sft_steps):
        batch = rng.sample(encoded, spec.sft_batch_size)
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, prompt_len) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
            attention[row, : len(ids)] = 1
        lr_scale = 0.5 * (1 + torch.cos(torch.tensor(step / spec.sft_steps * torch.pi))).item()  # cosine decay
        for group in optimizer.param_groups:
            group["lr"] = spec.sft_learning_rate * lr_scale
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def data_folder(variant: str) -> str:
    """Where a variant's files lie under ``data/``: the default task at the top (as before variants existed)."""
    return "" if variant == "reverse" else variant


@dataclass(frozen=True)
class BuiltinAssets:
    root: Path

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def data_dir(self, variant: str = "reverse") -> Path:
        return self.root / "data" / data_folder(variant)

    @property
    def train_file(self) -> Path:
        return self.data_dir() / "train.jsonl"

    def train_file_of(self, variant: str) -> Path:
        return self.data_dir(variant) / "train.jsonl"

    def eval_files(self, variant: str = "reverse") -> dict[str, Path]:
        return {name: self.data_dir(variant) / f"{name}.jsonl" for name in EVAL_SETS}


def prepare_builtin(
    cache_dir: Path | None = None, task: TaskSpec | None = None, model_spec: TinyModelSpec | None = None
) -> BuiltinAssets:
    """Build (first call) or reuse the cached built-in assets; safe if two processes race (atomic rename)."""
    task, model_spec = task or TaskSpec(), model_spec or TinyModelSpec()
    root = (cache_dir or default_cache_dir()) / f"builtin-{_cache_key(task, model_spec)}"
    if (root / "COMPLETE").exists():
        return BuiltinAssets(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=root.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared like any model folder
    try:
        variants = generate_task(task)
        for variant in VARIANTS:
            folder = staging / "data" / data_folder(variant)
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("train", *EVAL_SETS):
                _write_jsonl(folder / f"{name}.jsonl", variants[variant][name])
        tokenizer = build_byte_tokenizer()
        model = build_tiny_llama(model_spec, tokenizer)
        losses = supervised_warmup(model, tokenizer, variants["reverse"]["sft"], model_spec)
        # is_main_process=True: under torchrun, transformers would otherwise write the weights on rank 0 only,
        # and another rank could publish a folder without them.
        model.save_pretrained(staging / "model", is_main_process=True)
        tokenizer.save_pretrained(staging / "model")
        info = {
            "task": asdict(task),
            "model": asdict(model_spec),
            "sft_loss_first": losses[0],
            "sft_loss_last": losses[-1],
        }
        (staging / "assets.json").write_text(json.dumps(info, indent=2))
        (staging / "COMPLETE").write_text("ok\n")
        try:
            staging.rename(root)
        except OSError:  # another process finished first; use its copy
            if not (root / "COMPLETE").exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return BuiltinAssets(root)
