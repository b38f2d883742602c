#!/usr/bin/env python
"""Benchmark one preference-optimization training step across implementations, on one model and one data file.

Run ``python benchmarks/preference_step.py --help`` for the options; ``benchmarks/README.md`` has examples.

What runs
---------
For every vocabulary size V (default 32000 and 128256) the script builds, once, in a work folder:

* a Llama-architecture model (default hidden 256, 4 layers, MLP 688, 4 heads; `--hidden_size` ... `--num_kv_heads`
  change it), untied embeddings, random init with a fixed seed, saved with ``save_pretrained`` (safetensors);
  float32 on CPU, bfloat16 when a GPU is used;
* a word-level tokenizer of exactly V tokens (``w0`` .. ``w{V-5}`` plus ``<pad> <unk> <bos> <eos>``; BOS is
  added by the tokenizer's post-processor), so the text "w5 w17 w3" is exactly the ids of those words and every
  sequence length is known in advance;
* N preference pairs as JSONL (``prompt``, ``chosen``, ``rejected``, plain strings; responses start with a
  space so that ``prompt + response`` splits into the same words). Lengths are seeded and the same for every V:
  prompt P words, P uniform in [min_len/2, max_len/2]; responses C, R uniform so that P + C and P + R lie in
  [min_len, max_len]. In tokens, a sequence is BOS + P + C + EOS.

Each framework then trains ``warmup + steps`` optimizer steps on that same file, in a fresh subprocess (so peak
RSS is per framework), and the parent alternates them: for each round, each framework once (the order rotates
between rounds). Every Trainer-based worker uses ``train_sampling_strategy="sequential"`` (no shuffling), so
step k of every framework trains pairs [k*B, (k+1)*B) of the file: the same batches everywhere, and the step-1
losses (computed before any update) must agree between implementations of the same loss.

Frameworks: ``amapo-simpo``, ``amapo-amapo``, ``amapo-dpo`` (this project's ``run_training``),
``trl-cpo-simpo`` (TRL's ``CPOTrainer``, loss_type="simpo", cpo_alpha=0 i.e. pure SimPO), ``trl-dpo`` (TRL's
``DPOTrainer``, reference model loaded by TRL from the same folder), ``liger-simpo`` (a hand-written loop: the
backbone's hidden states into Liger's ``LigerFusedLinearSimPOLoss`` with the LM head weight; only when
``liger-kernel`` imports). SimPO everywhere: beta 2.0, gamma 1.0 (amapo: gamma_beta_ratio 0.5). DPO: beta 0.1.
Shared settings: AdamW as ``transformers.Trainer`` builds it, constant learning rate 1e-6, no warm-up schedule,
gradient clipping 1.0, gradient accumulation 1, no gradient checkpointing (TRL's configs default it on; it is
switched off so that all frameworks do the same work), logging every step, no checkpoints.

What is measured
----------------
* step time: for Trainer-based workers, the wall time between consecutive ``on_step_end`` callbacks (the first
  measured step is timed from the ``on_step_end`` of the last warm-up step; with ``--warmup 0`` from
  ``on_step_begin`` of step 1), so it includes fetching and collating the batch and the per-step logging. For the
  Liger loop: collate + forward + backward + clip + optimizer step + ``loss.item()``. On CUDA the device is
  synchronized at each boundary. Warm-up steps are never measured.
* tokens of a step: the logical non-pad tokens of the step's pairs, the same count for every framework:
  sum over the B pairs of len(BOS+prompt+chosen+EOS) + len(BOS+prompt+rejected+EOS), from the data order.
  Workers also count the non-pad tokens of the batches their collator really produced (``observed``); a
  mismatch is printed as a warning (a layout that shares the prompt processes fewer tokens than it is credited
  with: tokens/s then measures pairs of a given length per second, which is what a user cares about).
* tokens/s: per measured step, tokens / step time; the table shows the median over all measured steps of all
  rounds. Step time: the median likewise.
* peak RSS: ``getrusage(RUSAGE_SELF).ru_maxrss`` of the worker at its end (includes loading and tokenizing);
  RSS increase: peak RSS minus the RSS right before the first training step. The table shows the largest over
  rounds. On CUDA also ``torch.cuda.max_memory_allocated``.
* step-1 loss: the Trainer's logged ``loss`` of step 1 (the model before any update, on the first batch).
  A separate ``losscheck`` worker also computes the SimPO loss of the first ``--losscheck_batch`` pairs with
  TRL's ``CPOTrainer.compute_loss`` on a batch from its own collator, with amapo (``run_training`` with
  max_steps=1, learning rate 0, its logged step-1 loss; a compute_loss before any update) and with Liger, and
  prints the values and their differences.

Model FLOPs and MFU (the same definition for every framework)
-------------------------------------------------------------
Per step, with N = non-embedding parameters (the transformer blocks and the final norm: neither the input
embedding nor the LM head), H = hidden size, L = layers, V = vocabulary, T = the step's tokens (above),
R = the step's response tokens (response + EOS of chosen and rejected: the tokens whose log-prob the loss needs),
and S = sum over the step's 2B sequences of len(sequence)^2::

    flops = 6*N*T  +  6*H*V*R  +  6*L*H*S        (dense layers, LM head on the needed positions, causal attention)

(forward + backward = 3 x forward; attention QK^T and AV are 2 * 2*H*len^2 per layer forward, halved for causal
masking.) Reference-based losses (amapo-dpo, trl-dpo) add the reference forward, 1/3 of that: flops * 4/3.
Work an implementation does beyond this (logits at prompt and pad positions, gradient checkpointing recompute)
is not counted; work it skips (a shared prompt) is still counted. MFU = (flops / step time) / peak, where peak
is this machine's measured matmul throughput, measured once by the parent: the median of 10 fp32
2048x2048x2048 ``torch.matmul`` on CPU, or bf16 4096^3 on CUDA; MFU is the median over measured steps.

Output
------
A markdown table per vocabulary (framework | tokens/s | step time | peak RSS | RSS increase | [CUDA max
allocated] | MFU | step-1 loss | ratios of tokens/s and of peak RSS to trl-cpo-simpo), the machine, the
versions and the exact command; all raw numbers (every step of every round) go to the ``--out`` JSON, the tables
also to the same path with ``.md``. A worker that fails (an exception, a timeout, killed e.g. out of memory) is
reported as failed with its error; the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import itertools
import json
import math
import os
import platform
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

RESULT_MARKER = "PREFSTEP_RESULT "
AMAPO_FRAMEWORKS = {"amapo-simpo": "simpo", "amapo-amapo": "amapo", "amapo-dpo": "dpo"}
FRAMEWORKS = ("amapo-simpo", "amapo-amapo", "amapo-dpo", "trl-cpo-simpo", "trl-dpo", "liger-simpo")
REFERENCE_BASED = {"amapo-dpo", "trl-dpo"}
BASELINE = "trl-cpo-simpo"
SIMPO_BETA, SIMPO_GAMMA = 2.0, 1.0  # SimPO's Llama-3-Base setting; amapo: gamma_beta_ratio = gamma / beta
DPO_BETA = 0.1
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")  # ids 0..3; words are 4..V-1
MODEL_SHAPE = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "intermediate_size": 688,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}
MAX_LENGTH_SLACK = 8  # every framework's max_length is max_len + this: BOS and EOS fit, nothing is truncated
REPO_ROOT = Path(__file__).resolve().parent.parent
GB = 1024**3  # sizes are reported in GiB


# ================================================================================================================
# shared helpers
# ================================================================================================================


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def pair_token_stats(row: dict) -> dict[str, int]:
    """Token counts of one pair as every framework sees it: BOS + prompt words, response words + EOS."""
    p, c, r = len(row["prompt"].split()), len(row["chosen"].split()), len(row["rejected"].split())
    chosen_len, rejected_len = 1 + p + c + 1, 1 + p + r + 1
    return {
        "tokens": chosen_len + rejected_len,
        "response_tokens": (c + 1) + (r + 1),
        "sum_len_sq": chosen_len**2 + rejected_len**2,
        "max_len": max(chosen_len, rejected_len),
    }


def step_token_stats(rows: list[dict], batch: int, n_steps: int) -> list[dict[str, int]]:
    """Per optimizer step k (0-based), the counts of pairs [k*batch, (k+1)*batch): sequential sampling."""
    steps = []
    for k in range(n_steps):
        stats = [pair_token_stats(row) for row in rows[k * batch : (k + 1) * batch]]
        steps.append(
            {
                "pairs": len(stats),
                "tokens": sum(s["tokens"] for s in stats),
                "response_tokens": sum(s["response_tokens"] for s in stats),
                "sum_len_sq": sum(s["sum_len_sq"] for s in stats),
                "padded_tokens": 2 * len(stats) * max(s["max_len"] for s in stats),
            }
        )
    return steps


def model_flops(step: dict, *, n_nonembedding: int, hidden: int, vocab: int, layers: int, reference: bool) -> float:
    """Model FLOPs of one step (module docstring): 6NT + 6HVR + 6LHS, times 4/3 with a reference forward."""
    flops = 6.0 * n_nonembedding * step["tokens"]
    flops += 6.0 * hidden * vocab * step["response_tokens"]
    flops += 6.0 * layers * hidden * step["sum_len_sq"]
    return flops * (4.0 / 3.0 if reference else 1.0)


def version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def liger_status() -> tuple[bool, str]:
    """(usable, description): whether ``LigerFusedLinearSimPOLoss`` imports here."""
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearSimPOLoss  # noqa: F401
    except Exception as e:  # ImportError, or a broken triton install raising something else
        return False, f"{type(e).__name__}: {e}".splitlines()[0][:200]
    return True, f"liger-kernel {version_of('liger-kernel')}"


# ================================================================================================================
# worker side: one framework, one vocabulary, in its own process
# ================================================================================================================


def describe_batch(batch) -> dict | None:
    """What a collated batch holds, whatever its layout: ``tokens`` (logical: the non-pad tokens of its 2B
    prompt+response sequences), ``processed_tokens`` (input positions that are not padding: fewer than ``tokens``
    when the prompt is shared), ``padded_tokens`` (all input positions), ``response_tokens``, ``sum_len_sq``
    (over the logical sequences) and ``layout``. None when the batch is not recognised.
    """
    import torch

    if "segment_ids" in batch:  # amapo shared_prompt: one row per pair, 0 pad, 1 prompt, 2 chosen, 3 rejected
        segments = batch["segment_ids"]
        prompt, chosen, rejected = ((segments == s).sum(-1) for s in (1, 2, 3))
        lengths = torch.cat([prompt + chosen, prompt + rejected])
        processed, padded, layout = int((segments > 0).sum()), segments.numel(), "shared_prompt"
    elif any(k in batch for k in ("attention_mask", "chosen_attention_mask", "rejected_attention_mask")):
        keys = [k for k in ("attention_mask", "chosen_attention_mask", "rejected_attention_mask") if k in batch]
        lengths = torch.cat([batch[k].sum(-1).reshape(-1) for k in keys])
        processed, padded, layout = int(lengths.sum()), sum(batch[k].numel() for k in keys), "padded"
    elif "position_ids" in batch and batch["input_ids"].shape[0] == 1:  # packed: positions restart per sequence
        positions = batch["position_ids"].reshape(-1)
        starts = [*torch.nonzero(positions == 0).reshape(-1).tolist(), positions.numel()]
        lengths = torch.tensor([b - a for a, b in itertools.pairwise(starts)])
        processed, padded, layout = positions.numel(), positions.numel(), "packed"
    else:
        return None
    lengths = lengths.long()
    out = {
        "tokens": int(lengths.sum()),
        "processed_tokens": processed,
        "padded_tokens": int(padded),
        "sum_len_sq": int((lengths**2).sum()),
        "layout": layout,
    }
    if "response_lengths" in batch:  # amapo, every layout
        out["response_tokens"] = int(batch["response_lengths"].sum())
    elif "response_mask" in batch:  # amapo, older collator
        out["response_tokens"] = int(batch["response_mask"].sum())
    elif "completion_mask" in batch:  # TRL DPO
        out["response_tokens"] = int(batch["completion_mask"].sum())
    elif "chosen_labels" in batch and "rejected_labels" in batch:  # TRL CPO
        out["response_tokens"] = int((batch["chosen_labels"] != -100).sum() + (batch["rejected_labels"] != -100).sum())
    elif "labels" in batch:  # the Liger loop
        out["response_tokens"] = int((batch["labels"] != -100).sum())
    return out


class BatchCounter:
    """Wraps a DataLoader's collate_fn to record what each collated batch holds, in the order they are made."""

    def __init__(self) -> None:
        self.batches: list[dict | None] = []
        self.error: str | None = None

    def install(self, dataloader) -> None:
        target = getattr(dataloader, "base_dataloader", dataloader)  # accelerate wraps the torch DataLoader
        inner = getattr(target, "collate_fn", None)
        if inner is None:
            self.error = "the dataloader has no collate_fn"
            return

        def counting_collate(features):
            batch = inner(features)
            try:
                self.batches.append(describe_batch(batch))
            except Exception as e:  # counting must never break training
                self.batches.append(None)
                self.error = f"{type(e).__name__}: {e}"
            return batch

        try:
            target.collate_fn = counting_collate
        except Exception as e:
            self.error = f"could not wrap collate_fn: {type(e).__name__}: {e}"


def make_step_timer(warmup: int, cuda: bool):
    """A TrainerCallback timing optimizer steps, recording logged losses, RSS before training, batch contents."""
    import torch
    from transformers import TrainerCallback

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.step_times: list[float] = []
            self.measured_steps: list[int] = []
            self.losses: dict[int, float] = {}
            self.logs: list[dict] = []
            self.rss_before_train: int | None = None
            self.cuda_allocated_before_train: int | None = None
            self.counter = BatchCounter()
            self._last: float | None = None

        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            sync()
            self.rss_before_train = current_rss_bytes()
            if cuda:
                self.cuda_allocated_before_train = torch.cuda.memory_allocated()
            if train_dataloader is not None:
                self.counter.install(train_dataloader)
            else:
                self.counter.error = "no train_dataloader in on_train_begin"

        def on_step_begin(self, args, state, control, **kwargs):
            if warmup == 0 and state.global_step == 0:
                sync()
                self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            now = time.perf_counter()
            if state.global_step > warmup and self._last is not None:
                self.step_times.append(now - self._last)
                self.measured_steps.append(state.global_step)
            self._last = now

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses[int(state.global_step)] = float(logs["loss"])
                self.logs.append({"step": int(state.global_step), **{k: v for k, v in logs.items() if _jsonable(v)}})

    return StepTimer()


def _jsonable(value) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


def worker_device(a) -> str:
    return "cuda" if a.device == "cuda" else "cpu"


def load_model_and_tokenizer(a):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if worker_device(a) == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(a.model_dir)
    return model, tokenizer


def common_training_kwargs(a, output_dir: str, *, batch: int, max_steps: int, learning_rate: float) -> dict:
    """TrainingArguments shared by every Trainer-based framework."""
    cuda = worker_device(a) == "cuda"
    return {
        "output_dir": output_dir,
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1,
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "seed": a.seed,
        "bf16": cuda,
        "use_cpu": not cuda,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "gradient_checkpointing": False,
        "train_sampling_strategy": "sequential",
    }


def build_amapo_config(a, method: str, output_dir: str, *, batch: int, max_steps: int, learning_rate: float):
    """(TrainConfig, notes): the brief's settings, keeping only fields this checkout's TrainConfig has."""
    from amapo.train.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cuda = worker_device(a) == "cuda"
    kwargs = common_training_kwargs(a, output_dir, batch=batch, max_steps=max_steps, learning_rate=learning_rate)
    kwargs.update(
        model_name_or_path=a.model_dir,
        dataset=a.data,
        method=method,
        warmup_ratio=0.0,
        max_length=a.max_len + MAX_LENGTH_SLACK,
        max_prompt_length=a.max_len,
        overwrite_output_dir=True,
        torch_dtype="bfloat16" if cuda else "float32",
        # the step's speed in bf16 weights, as the TRL and Liger workers run; no optimizer-precision claim is made
        allow_low_precision_weights=cuda,
    )
    if method == "simpo":
        kwargs.update(beta=SIMPO_BETA, gamma_beta_ratio=SIMPO_GAMMA / SIMPO_BETA)
    elif method == "dpo":
        kwargs.update(beta=DPO_BETA)
    notes = []
    for option, field in (("amapo_layout", "batch_layout"), ("amapo_lm_head_chunk_size", "lm_head_chunk_size")):
        value = getattr(a, option)
        if value is None:
            continue
        if field in names:
            kwargs[field] = value
        else:
            notes.append(f"--{option} ignored: this TrainConfig has no field {field!r}")
    dropped = sorted(k for k in kwargs if k not in names)
    if dropped:
        notes.append(f"TrainConfig has no field(s) {dropped}: not passed")
    config = TrainConfig(**{k: v for k, v in kwargs.items() if k in names})
    return config, notes


def run_amapo(a, framework: str, timer, result: dict) -> None:
    from amapo.train.run import run_training

    config, notes = build_amapo_config(
        a, AMAPO_FRAMEWORKS[framework], a.output_dir, batch=a.batch, max_steps=a.warmup + a.steps, learning_rate=a.lr
    )
    result["notes"] += notes
    result["settings"] = {
        name: getattr(config, name)
        for name in ("method", "beta", "gamma_beta_ratio", "batch_layout", "lm_head_chunk_size", "optim")
        if hasattr(config, name)
    }
    result["settings"]["optim"] = str(result["settings"].get("optim"))
    run_training(config, callbacks=[timer])


def load_json_dataset(path: str):
    from datasets import load_dataset

    return load_dataset("json", data_files=path, split="train")


def cpo_config(a, output_dir: str, *, batch: int, max_steps: int, learning_rate: float):
    from trl.experimental.cpo import CPOConfig

    return CPOConfig(
        **common_training_kwargs(a, output_dir, batch=batch, max_steps=max_steps, learning_rate=learning_rate),
        warmup_steps=0,
        loss_type="simpo",
        cpo_alpha=0.0,  # no NLL term: pure SimPO
        beta=SIMPO_BETA,
        simpo_gamma=SIMPO_GAMMA,  # absolute margin (TRL subtracts simpo_gamma / beta from the log-ratio)
        max_length=a.max_len + MAX_LENGTH_SLACK,
        remove_unused_columns=False,
    )


def run_trl_cpo(a, timer, result: dict) -> None:
    from trl.experimental.cpo import CPOTrainer

    model, tokenizer = load_model_and_tokenizer(a)
    args = cpo_config(a, a.output_dir, batch=a.batch, max_steps=a.warmup + a.steps, learning_rate=a.lr)
    result["settings"] = {
        "loss_type": args.loss_type,
        "cpo_alpha": args.cpo_alpha,
        "beta": args.beta,
        "simpo_gamma": args.simpo_gamma,
        "max_length": args.max_length,
        "gradient_checkpointing": args.gradient_checkpointing,
        "optim": str(args.optim),
    }
    trainer = CPOTrainer(
        model=model, args=args, train_dataset=load_json_dataset(a.data), processing_class=tokenizer, callbacks=[timer]
    )
    trainer.train()


def run_trl_dpo(a, timer, result: dict) -> None:
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = load_model_and_tokenizer(a)
    args = DPOConfig(
        **common_training_kwargs(a, a.output_dir, batch=a.batch, max_steps=a.warmup + a.steps, learning_rate=a.lr),
        warmup_steps=0,
        beta=DPO_BETA,
        loss_type=["sigmoid"],
        max_length=a.max_len + MAX_LENGTH_SLACK,  # keep_start truncation never triggers
        precompute_ref_log_probs=False,
    )
    result["settings"] = {
        "loss_type": args.loss_type,
        "beta": args.beta,
        "max_length": args.max_length,
        "truncation_mode": args.truncation_mode,
        "precompute_ref_log_probs": args.precompute_ref_log_probs,
        "gradient_checkpointing": args.gradient_checkpointing,
        "ref_model": "None: TRL loads a copy from the policy's folder",
        "optim": str(args.optim),
    }
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=load_json_dataset(a.data),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()


def liger_batches(rows: list[dict], tokenizer, batch: int, n_steps: int):
    """Tokenized pairs for the Liger loop, in data order: (prompt ids with BOS, chosen ids + EOS, rejected + EOS)."""
    pairs = []
    for row in rows[: batch * n_steps]:
        prompt = list(tokenizer(row["prompt"])["input_ids"])  # the post-processor adds BOS
        chosen = [*tokenizer(row["chosen"], add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        rejected = [*tokenizer(row["rejected"], add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        pairs.append((prompt, chosen, rejected))
    return [pairs[k * batch : (k + 1) * batch] for k in range(n_steps)]


def collate_liger(pairs, pad_id: int, device):
    """[2B, T] right-padded: rows 0..B-1 prompt+chosen, B..2B-1 prompt+rejected; labels -100 off the responses."""
    import torch

    sequences = [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs]
    width = max(len(p) + len(x) for p, x in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    labels = torch.full((len(sequences), width), -100, dtype=torch.long)
    for i, (prompt, response) in enumerate(sequences):
        seq = prompt + response
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
        labels[i, len(prompt) : len(seq)] = torch.tensor(response)
    return {
        k: v.to(device) for k, v in (("input_ids", input_ids), ("attention_mask", attention_mask), ("labels", labels))
    }


def liger_loss_fn(a):
    from liger_kernel.chunked_loss import LigerFusedLinearSimPOLoss

    return LigerFusedLinearSimPOLoss(
        beta=SIMPO_BETA,
        gamma=SIMPO_GAMMA,  # absolute margin: beta*(avg logp_w - avg logp_l) - gamma
        compute_nll_loss=False,  # pure SimPO (alpha would weight the NLL term)
        compiled=not a.liger_no_compile,
        chunk_size=a.liger_chunk_size,
    )


def liger_forward_loss(model, loss_fn, batch, autocast):
    with autocast():
        hidden = model.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).last_hidden_state
        # hidden[:, t] predicts token t + 1: shift here, Liger does not
        out = loss_fn(model.lm_head.weight, hidden[:, :-1], batch["labels"][:, 1:])
    return out[0] if isinstance(out, tuple) else out


def autocast_for(a):
    import torch

    if worker_device(a) == "cuda":
        return lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def run_liger(a, result: dict) -> dict:
    """Hand-written SimPO loop with Liger's fused linear loss; returns the timer-like record."""
    import torch
    from transformers import Trainer, TrainingArguments

    device = torch.device(worker_device(a))
    model, tokenizer = load_model_and_tokenizer(a)
    model.to(device).train()
    n_steps = a.warmup + a.steps
    batches = liger_batches(read_jsonl(a.data), tokenizer, a.batch, n_steps)
    # The optimizer exactly as transformers.Trainer builds it for these settings (AdamW, fused where supported).
    targs = TrainingArguments(
        **{
            k: v
            for k, v in common_training_kwargs(
                a, a.output_dir, batch=a.batch, max_steps=n_steps, learning_rate=a.lr
            ).items()
            if k != "train_sampling_strategy"
        }
    )
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(targs, model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer_cls(params, **optimizer_kwargs)
    loss_fn = liger_loss_fn(a)
    autocast = autocast_for(a)
    result["settings"] = {
        "beta": SIMPO_BETA,
        "gamma": SIMPO_GAMMA,
        "compute_nll_loss": False,
        "compiled": not a.liger_no_compile,
        "chunk_size": a.liger_chunk_size,
        "optimizer": f"{optimizer_cls.__name__} {optimizer_kwargs}",
        "max_grad_norm": targs.max_grad_norm,
    }

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    record = {"step_times": [], "measured_steps": [], "losses": {}, "batches": []}
    sync()
    record["rss_before_train"] = current_rss_bytes()
    if device.type == "cuda":
        record["cuda_allocated_before_train"] = torch.cuda.memory_allocated()
    for k, pairs in enumerate(batches):
        sync()
        start = time.perf_counter()
        batch = collate_liger(pairs, tokenizer.pad_token_id, device)
        try:
            loss = liger_forward_loss(model, loss_fn, batch, autocast)
        except Exception as e:
            if k > 0 or not loss_fn.compiled:
                raise
            # torch.compile of Liger's chunk function failed (e.g. no compiler here): go on uncompiled, say so
            result["notes"].append(f"Liger compiled=True failed ({type(e).__name__}: {e}); ran compiled=False")
            result["settings"]["compiled"] = False
            loss_fn.compiled = False
            optimizer.zero_grad(set_to_none=True)
            loss = liger_forward_loss(model, loss_fn, batch, autocast)
        loss.backward()
        if targs.max_grad_norm and targs.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, targs.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(loss.detach().float().item())
        sync()
        elapsed = time.perf_counter() - start
        record["losses"][k + 1] = loss_value
        record["batches"].append(describe_batch(batch))
        if k + 1 > a.warmup:
            record["step_times"].append(elapsed)
            record["measured_steps"].append(k + 1)
    return record


def run_losscheck(a, result: dict) -> None:
    """SimPO loss of the first ``--losscheck_batch`` pairs by TRL CPO, amapo and Liger, before any update."""
    import torch

    n = a.losscheck_batch
    values: dict[str, float] = {}
    errors: dict[str, str] = {}
    cuda = worker_device(a) == "cuda"

    # TRL CPOTrainer.compute_loss on one batch of its own collator, and its logged step-1 loss with lr 0.
    try:
        from transformers import TrainerCallback
        from trl.experimental.cpo import CPOTrainer

        model, tokenizer = load_model_and_tokenizer(a)
        args = cpo_config(a, str(Path(a.output_dir) / "trl"), batch=n, max_steps=1, learning_rate=0.0)
        logged: dict[int, float] = {}

        class LossLog(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    logged[int(state.global_step)] = float(logs["loss"])

        trainer = CPOTrainer(
            model=model,
            args=args,
            train_dataset=load_json_dataset(a.data),
            processing_class=tokenizer,
            callbacks=[LossLog()],
        )
        batch = next(iter(trainer.get_train_dataloader()))
        result["trl_first_batch"] = describe_batch(batch)
        trainer.model.train()
        with torch.no_grad(), trainer.compute_loss_context_manager():
            values["trl-cpo compute_loss"] = float(trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch)))
        trainer.train()
        if 1 in logged:
            values["trl-cpo logged step-1 (lr 0)"] = logged[1]
        del trainer, model
    except Exception as e:
        errors["trl-cpo"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()

    # amapo: run_training for one step with learning rate 0; the logged loss of step 1 is compute_loss before
    # any update, on the first n pairs (sequential sampling).
    try:
        from amapo.train.run import run_training

        timer = make_step_timer(0, cuda)
        config, notes = build_amapo_config(
            a, "simpo", str(Path(a.output_dir) / "amapo"), batch=n, max_steps=1, learning_rate=0.0
        )
        result["notes"] += notes
        run_training(config, callbacks=[timer])
        if 1 in timer.losses:
            values["amapo-simpo logged step-1 (lr 0)"] = timer.losses[1]
        if timer.counter.batches:
            result["amapo_first_batch"] = timer.counter.batches[0]
    except Exception as e:
        errors["amapo-simpo"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()

    # Liger, on the same pairs, no update.
    if a.with_liger:
        try:
            model, tokenizer = load_model_and_tokenizer(a)
            device = torch.device(worker_device(a))
            model.to(device).train()
            (pairs,) = liger_batches(read_jsonl(a.data), tokenizer, n, 1)
            batch = collate_liger(pairs, tokenizer.pad_token_id, device)
            with torch.no_grad():
                values["liger-simpo"] = float(liger_forward_loss(model, liger_loss_fn(a), batch, autocast_for(a)))
            result["liger_first_batch"] = describe_batch(batch)
        except Exception as e:
            errors["liger-simpo"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()

    reference = values.get("trl-cpo compute_loss")
    result["losscheck"] = {
        "pairs": n,
        "values": values,
        "diff_vs_trl_compute_loss": {k: v - reference for k, v in values.items()} if reference is not None else {},
        "errors": errors,
    }


def worker_main(a) -> int:
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = worker_device(a) == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result: dict = {"framework": a.worker, "vocab": a.vocab[0], "ok": False, "notes": []}
    result["torch_threads"] = torch.get_num_threads()
    start = time.perf_counter()
    try:
        if a.worker == "peak":  # in a subprocess so that the parent never holds a CUDA context
            result["peak_matmul"] = measure_peak_flops(cuda, a.threads)
            if cuda:
                result["gpu"] = torch.cuda.get_device_name(0)
                result["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / GB, 1)
        elif a.worker == "losscheck":
            run_losscheck(a, result)
        elif a.worker == "liger-simpo":
            record = run_liger(a, result)
            result.update(record)
            result["losses"] = {str(k): v for k, v in record["losses"].items()}
        else:
            timer = make_step_timer(a.warmup, cuda)
            if a.worker in AMAPO_FRAMEWORKS:
                run_amapo(a, a.worker, timer, result)
            elif a.worker == "trl-cpo-simpo":
                run_trl_cpo(a, timer, result)
            elif a.worker == "trl-dpo":
                run_trl_dpo(a, timer, result)
            else:
                raise ValueError(f"unknown worker {a.worker!r}")
            result.update(
                step_times=timer.step_times,
                measured_steps=timer.measured_steps,
                losses={str(k): v for k, v in timer.losses.items()},
                logs=timer.logs,
                rss_before_train=timer.rss_before_train,
                cuda_allocated_before_train=timer.cuda_allocated_before_train,
                batches=timer.counter.batches,
            )
            if timer.counter.error:
                result["notes"].append(f"batch counter: {timer.counter.error}")
        result["ok"] = True
    except BaseException as e:  # report, never crash silently: the parent reads the marker line
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()[-4000:]
    result["peak_rss"] = peak_rss_bytes()
    result["wall_s"] = time.perf_counter() - start
    if cuda:
        result["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
    sys.stdout.flush()
    print("\n" + RESULT_MARKER + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


# ================================================================================================================
# parent side: build the model, tokenizer and data; alternate the workers; summarize
# ================================================================================================================


def build_tokenizer(vocab: int, model_dir: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = vocab - len(SPECIAL_TOKENS)
    if words < 2:
        raise ValueError(f"--vocab {vocab} is too small: need more than {len(SPECIAL_TOKENS) + 1} tokens")
    table = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    table.update({f"w{j}": len(SPECIAL_TOKENS) + j for j in range(words)})
    core = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos_id = table["<bos>"]
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=1_000_000,
    )
    if len(tokenizer) != vocab:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, expected {vocab}")
    ids = tokenizer("w5 w17 w3")["input_ids"]
    if ids != [bos_id, 9, 21, 7]:
        raise RuntimeError(f"tokenizer check failed: 'w5 w17 w3' -> {ids}")
    tokenizer.save_pretrained(str(model_dir))
    return tokenizer


def model_shape(a) -> dict[str, int]:
    """``MODEL_SHAPE`` with the ``--hidden_size`` ... ``--num_kv_heads`` the command gave."""
    given = {
        "hidden_size": a.hidden_size,
        "num_hidden_layers": a.num_layers,
        "intermediate_size": a.intermediate_size,
        "num_attention_heads": a.num_heads,
        "num_key_value_heads": a.num_kv_heads,
    }
    return MODEL_SHAPE | {k: v for k, v in given.items() if v is not None}


def build_model(vocab: int, model_dir: Path, seed: int, max_len: int, cuda: bool, shape: dict | None = None) -> dict:
    """Random-init Llama of ``shape`` (default ``MODEL_SHAPE``) saved to ``model_dir``; its shape and parameter
    counts."""
    shape = shape or MODEL_SHAPE
    import inspect

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        max_position_embeddings=max(2048, max_len + 64),
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        **shape,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if cuda:
        model = model.to(torch.bfloat16)  # saved in the dtype every worker trains in
    save_kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        save_kwargs["safe_serialization"] = True
    model.save_pretrained(str(model_dir), **save_kwargs)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    return {
        "vocab": vocab,
        **shape,
        "tie_word_embeddings": False,
        "dtype": "bfloat16" if cuda else "float32",
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "params_total": total,
        "params_embedding": embedding,
        "params_lm_head": head,
        "params_nonembedding": total - embedding - head,
    }


def make_pairs(n: int, vocab: int, min_len: int, max_len: int, seed: int) -> list[dict]:
    """Seeded pairs; lengths come from their own generator, so they are the same for every vocabulary."""
    lengths_rng, words_rng = random.Random(seed), random.Random(seed + 1)
    n_words = vocab - len(SPECIAL_TOKENS)

    def text(count: int) -> str:
        return " ".join(f"w{words_rng.randrange(n_words)}" for _ in range(count))

    rows = []
    for _ in range(n):
        p = lengths_rng.randint(max(1, min_len // 2), max(1, max_len // 2))
        lo, hi = max(1, min_len - p), max(1, max_len - p)
        c, r = lengths_rng.randint(lo, hi), lengths_rng.randint(lo, hi)
        prompt, chosen, rejected = text(p), text(c), text(r)
        while rejected == chosen:
            rejected = text(r)
        # a leading space: prompt + response splits into exactly the prompt's words then the response's
        rows.append({"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected})
    return rows


def measure_peak_flops(cuda: bool, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    if cuda:
        n, dtype, device, reps = 4096, torch.bfloat16, "cuda", 20
    else:
        n, dtype, device, reps = 2048, torch.float32, "cpu", 10
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    times = []
    for i in range(reps + 2):  # two warm-up products
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if cuda:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    del a, b
    if cuda:
        torch.cuda.empty_cache()
    return {
        "what": f"median of {reps} {str(dtype).replace('torch.', '')} {n}x{n}x{n} torch.matmul on {device}",
        "flops_per_s": 2.0 * n**3 / median,
        "gflops_per_s": 2.0 * n**3 / median / 1e9,
        "threads": torch.get_num_threads(),
    }


def machine_info(cuda: bool) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            name: version_of(name)
            for name in (
                "torch",
                "transformers",
                "trl",
                "accelerate",
                "datasets",
                "tokenizers",
                "liger-kernel",
                "amapo",
            )
        },
    }
    with contextlib.suppress(OSError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["ram_gb"] = round(pages / GB, 1)
    return info


def probe_device(a, workdir: Path) -> dict:
    """Peak matmul throughput (and the GPU's name), measured in a subprocess."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "peak", "--device", a.device]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(workdir), cwd=REPO_ROOT, timeout=600)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
            if result.get("ok"):
                return result
            raise RuntimeError(f"measuring the peak matmul throughput failed: {result.get('error')}")
    raise RuntimeError(f"measuring the peak matmul throughput failed:\n{proc.stderr[-3000:]}")


def worker_command(a, framework: str, vocab: int, model_dir: Path, data: Path, output_dir: Path) -> list[str]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker", framework,
        "--vocab", str(vocab),
        "--model_dir", str(model_dir),
        "--data", str(data),
        "--output_dir", str(output_dir),
        "--batch", str(a.batch),
        "--min_len", str(a.min_len),
        "--max_len", str(a.max_len),
        "--steps", str(a.steps),
        "--warmup", str(a.warmup),
        "--lr", repr(a.lr),
        "--seed", str(a.seed),
        "--device", a.device,
        "--liger_chunk_size", str(a.liger_chunk_size),
        "--losscheck_batch", str(a.losscheck_batch),
    ]  # fmt: skip
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    if a.amapo_layout is not None:
        cmd += ["--amapo_layout", a.amapo_layout]
    if a.amapo_lm_head_chunk_size is not None:
        cmd += ["--amapo_lm_head_chunk_size", str(a.amapo_lm_head_chunk_size)]
    if a.liger_no_compile:
        cmd += ["--liger_no_compile"]
    if a.with_liger:
        cmd += ["--with_liger"]
    return cmd


def worker_env(workdir: Path) -> dict:
    env = os.environ.copy()
    src = str(REPO_ROOT / "src")  # benchmark this checkout's amapo
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_CACHE", str(workdir / "hf_datasets_cache"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_worker(a, framework: str, vocab: int, paths: dict, workdir: Path, tag: str) -> dict:
    output_dir = workdir / "runs" / tag
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    log_path = workdir / "logs" / f"{tag}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = worker_command(a, framework, vocab, paths["model_dir"], paths["data"], output_dir)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=a.worker_timeout, env=worker_env(workdir), cwd=REPO_ROOT
        )
        stdout, stderr, returncode = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        returncode = None
    elapsed = time.perf_counter() - start
    log_path.write_text(f"$ {shlex.join(cmd)}\n\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
    result = None
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            with contextlib.suppress(json.JSONDecodeError):
                result = json.loads(line[len(RESULT_MARKER) :])
            break
    if result is None:
        if returncode is None:
            error = f"timed out after {a.worker_timeout} s"
        elif returncode < 0:
            signal_number = -returncode
            error = f"killed by signal {signal_number}" + (" (likely out of memory)" if signal_number == 9 else "")
        else:
            error = f"exited with code {returncode} without a result"
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        result = {"framework": framework, "vocab": vocab, "ok": False, "error": error, "stderr_tail": tail}
    result["returncode"] = returncode
    result["process_wall_s"] = elapsed
    result["log"] = str(log_path)
    shutil.rmtree(output_dir, ignore_errors=True)  # trainer outputs (saved models) are not needed afterwards
    return result


def summarize(framework: str, runs: list[dict], steps: list[dict], data_info: dict, peak: float) -> dict:
    """Medians over every measured step of every successful round, peaks over rounds, and the checks."""
    ok = [r for r in runs if r.get("ok")]
    summary: dict = {"framework": framework, "rounds_ok": len(ok), "rounds": len(runs)}
    errors = [r.get("error", "?") for r in runs if not r.get("ok")]
    if errors:
        summary["errors"] = errors
    if not ok:
        summary["failed"] = True
        return summary
    model = data_info["model"]
    reference = framework in REFERENCE_BASED
    tokens_per_s, step_times, mfu, warnings, seen_batches = [], [], [], [], []
    for run in ok:
        observed = run.get("batches") or []
        for step, seconds in zip(run.get("measured_steps", []), run.get("step_times", []), strict=False):
            expected = steps[step - 1]
            seen = observed[step - 1] if step - 1 < len(observed) else None
            counted = expected
            if seen is not None:
                seen_batches.append(seen)
                for key in ("tokens", "response_tokens"):
                    if key in seen and seen[key] != expected[key]:
                        warnings.append(
                            f"step {step}: the collated batch held {seen[key]} {key.replace('_', ' ')}, "
                            f"the data order says {expected[key]} (a different batch, or truncation): "
                            "counted what the batch held"
                        )
                        counted = {**expected, **{k: seen.get(k, expected[k]) for k in ("tokens", "response_tokens")}}
                        counted["sum_len_sq"] = seen.get("sum_len_sq", expected["sum_len_sq"])
            flops = model_flops(
                counted,
                n_nonembedding=model["params_nonembedding"],
                hidden=model["hidden_size"],
                vocab=model["vocab"],
                layers=model["num_hidden_layers"],
                reference=reference,
            )
            tokens_per_s.append(counted["tokens"] / seconds)
            step_times.append(seconds)
            mfu.append(flops / seconds / peak)
        if not observed or all(b is None for b in observed):
            warnings.append("could not observe the collated batches: token counts are from the data order only")
    if not step_times:
        summary["failed"] = True
        summary.setdefault("errors", []).append("no measured steps")
        return summary
    losses = [r.get("losses", {}).get("1") for r in ok]
    losses = [x for x in losses if x is not None]
    summary.update(
        tokens_per_s=statistics.median(tokens_per_s),
        step_time_s=statistics.median(step_times),
        mfu=statistics.median(mfu),
        measured_steps=len(step_times),
        peak_rss=max(r["peak_rss"] for r in ok),
        rss_increase=max(r["peak_rss"] - (r.get("rss_before_train") or r["peak_rss"]) for r in ok),
        step1_loss=losses[0] if losses else None,
        step1_loss_spread=(max(losses) - min(losses)) if losses else None,
        warnings=sorted(set(warnings)),
    )
    cuda_peaks = [r["cuda_max_allocated"] for r in ok if r.get("cuda_max_allocated") is not None]
    if cuda_peaks:
        summary["cuda_max_allocated"] = max(cuda_peaks)
    if seen_batches:
        logical = sum(b["tokens"] for b in seen_batches)
        summary["observed"] = {
            "layouts": sorted({b.get("layout", "?") for b in seen_batches}),
            "processed_over_logical_tokens": sum(b["processed_tokens"] for b in seen_batches) / logical,
            "input_positions_over_logical_tokens": sum(b["padded_tokens"] for b in seen_batches) / logical,
        }
    settings = next((r["settings"] for r in ok if r.get("settings")), None)
    if settings:
        summary["settings"] = settings
    return summary


def layout_lines(summaries: dict[str, dict]) -> list[str]:
    lines = []
    for name, s in summaries.items():
        seen = s.get("observed")
        options = {k: v for k, v in s.get("settings", {}).items() if k in ("batch_layout", "lm_head_chunk_size")}
        if seen:
            asked = f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""
            lines.append(
                f"{name}: batch layout {'/'.join(seen['layouts'])}{asked}; tokens fed to the model (no padding) "
                f"{100 * seen['processed_over_logical_tokens']:.0f}% of the logical tokens, input positions "
                f"(padding included) {100 * seen['input_positions_over_logical_tokens']:.0f}%"
            )
    return lines


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def vocab_table(vocab: int, summaries: dict[str, dict], cuda: bool) -> str:
    base = summaries.get(BASELINE, {})
    base_ok = base and not base.get("failed")
    header = ["framework", "tokens/s", "step time s", "peak RSS GiB", "RSS increase GiB"]
    if cuda:
        header.append("CUDA max alloc GiB")
    header += ["MFU %", "step-1 loss", f"tokens/s vs {BASELINE}", f"peak RSS vs {BASELINE}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in summaries.items():
        if s.get("failed"):
            error = "; ".join(s.get("errors", ["failed"]))[:160].replace("|", "/").replace("\n", " ")
            cells = [name, f"FAILED: {error}"] + [""] * (len(header) - 2)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = [
            name,
            fmt(s["tokens_per_s"], ",.0f"),
            fmt(s["step_time_s"], ".3f"),
            fmt(s["peak_rss"] / GB, ".2f"),
            fmt(s["rss_increase"] / GB, ".2f"),
        ]
        if cuda:
            cells.append(fmt(s.get("cuda_max_allocated", 0) / GB, ".2f"))
        cells += [fmt(100 * s["mfu"], ".2f"), fmt(s["step1_loss"], ".6f")]
        if base_ok:
            cells += [
                fmt(s["tokens_per_s"] / base["tokens_per_s"], ".2f") + "x",
                fmt(s["peak_rss"] / base["peak_rss"], ".2f") + "x",
            ]
        else:
            cells += ["n/a", "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def loss_comparisons(summaries: dict[str, dict]) -> list[str]:
    lines = []
    for a_name, b_name in (
        ("amapo-simpo", "trl-cpo-simpo"),
        ("liger-simpo", "trl-cpo-simpo"),
        ("amapo-dpo", "trl-dpo"),
    ):
        a_loss = summaries.get(a_name, {}).get("step1_loss")
        b_loss = summaries.get(b_name, {}).get("step1_loss")
        if a_loss is not None and b_loss is not None:
            lines.append(f"step-1 loss {a_name} - {b_name}: {a_loss - b_loss:+.3e} ({a_loss:.8f} vs {b_loss:.8f})")
    for name in ("amapo-dpo", "trl-dpo"):
        loss = summaries.get(name, {}).get("step1_loss")
        if loss is not None:
            lines.append(f"step-1 loss {name} - ln 2 (policy == reference): {loss - math.log(2):+.3e}")
    for name, s in summaries.items():
        spread = s.get("step1_loss_spread")
        if spread:
            lines.append(f"note: {name}'s step-1 loss differs between rounds by {spread:.3e}")
    return lines


def losscheck_lines(check: dict | None) -> list[str]:
    if not check:
        return []
    if not check.get("ok"):
        return [f"loss check: FAILED: {check.get('error')}"]
    data = check.get("losscheck", {})
    lines = [f"loss check (SimPO, first {data.get('pairs')} pairs, before any update):"]
    diffs = data.get("diff_vs_trl_compute_loss", {})
    for name, value in data.get("values", {}).items():
        diff = diffs.get(name)
        suffix = f"   diff vs TRL compute_loss {diff:+.3e}" if diff is not None else ""
        lines.append(f"  {name:34s} {value:.8f}{suffix}")
    for name, error in data.get("errors", {}).items():
        lines.append(f"  {name}: FAILED: {error}")
    batches = {k: check.get(k) for k in ("trl_first_batch", "amapo_first_batch", "liger_first_batch") if check.get(k)}
    tokens = {k: b.get("tokens") for k, b in batches.items()}
    if len(set(tokens.values())) > 1:
        lines.append(f"  warning: the first batches differ in non-pad tokens: {tokens}")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark one preference-optimization step: amapo vs TRL (vs Liger), same model and data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256], help="vocabulary sizes to run")
    p.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--min_len", type=int, default=256, help="min words of prompt + response")
    p.add_argument("--max_len", type=int, default=512, help="max words of prompt + response")
    p.add_argument("--steps", type=int, default=4, help="measured optimizer steps per worker")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured optimizer steps before them")
    p.add_argument("--rounds", type=int, default=2, help="times each framework runs, alternating")
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/<cpu|cuda>.json)")
    p.add_argument("--lr", type=float, default=1e-6, help="constant learning rate")
    p.add_argument("--seed", type=int, default=0, help="model init, data and trainer seed")
    p.add_argument("--pairs", type=int, default=None, help="pairs in the data file (default: enough for all steps)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every process (default: torch's)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amapo_layout", default=None, help="amapo TrainConfig.batch_layout, if this checkout has it")
    p.add_argument(
        "--amapo_lm_head_chunk_size", type=int, default=None, help="amapo TrainConfig.lm_head_chunk_size, if present"
    )
    shape = p.add_argument_group("model shape (Llama architecture; default hidden 256, 4 layers, MLP 688, 4 heads)")
    shape.add_argument("--hidden_size", type=int, default=None)
    shape.add_argument("--num_layers", type=int, default=None)
    shape.add_argument("--intermediate_size", type=int, default=None)
    shape.add_argument("--num_heads", type=int, default=None, help="attention heads")
    shape.add_argument("--num_kv_heads", type=int, default=None, help="key/value heads (grouped-query attention)")
    p.add_argument("--liger_chunk_size", type=int, default=1, help="pairs per chunk in Liger's fused loss")
    p.add_argument("--liger_no_compile", action="store_true", help="Liger with compiled=False (default: compiled)")
    p.add_argument("--no_losscheck", action="store_true", help="skip the separate step-1 SimPO loss check")
    p.add_argument("--losscheck_batch", type=int, default=8, help="pairs in the loss check's batch")
    p.add_argument("--workdir", default=None, help="where models, data and logs go (default: a temp folder)")
    p.add_argument("--keep_workdir", action="store_true", help="keep the work folder (logs) at the end")
    p.add_argument("--worker_timeout", type=float, default=3600, help="seconds before a worker is stopped")
    # internal: the parent starts workers with these
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model_dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    p.add_argument("--output_dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--with_liger", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.min_len < 2 or a.max_len < a.min_len:
        p.error("need 2 <= min_len <= max_len")
    if a.batch < 1 or a.steps < 1 or a.warmup < 0 or a.rounds < 1:
        p.error("need batch >= 1, steps >= 1, warmup >= 0, rounds >= 1")
    return a


def parent_main(a) -> int:
    import torch

    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    cuda = a.device == "cuda"
    out = Path(a.out) if a.out else REPO_ROOT / "benchmarks" / "results" / f"{a.device}.json"
    command = shlex.join([sys.executable, *sys.argv])

    liger_ok, liger_text = liger_status()
    a.with_liger = liger_ok
    frameworks = list(dict.fromkeys(a.frameworks))
    if "liger-simpo" in frameworks and not liger_ok:
        frameworks.remove("liger-simpo")
    liger_line = f"liger: available ({liger_text})" if liger_ok else f"liger: not available ({liger_text})"

    n_steps = a.warmup + a.steps
    n_pairs = a.pairs or max(a.batch * n_steps, a.losscheck_batch) + a.batch
    if n_pairs < a.batch * n_steps:
        raise SystemExit(f"--pairs {n_pairs} < batch * (warmup + steps) = {a.batch * n_steps}")

    workdir = Path(a.workdir).resolve() if a.workdir else Path(tempfile.mkdtemp(prefix="preference_step_"))
    workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(cuda)
    probe = probe_device(a, workdir)
    peak = probe["peak_matmul"]
    for key in ("gpu", "gpu_memory_gb"):
        if key in probe:
            machine[key] = probe[key]
    print(f"command: {command}")
    print(f"machine: {machine['cpu']}, {machine['cpus_usable']} usable CPUs of {machine['cpu_count']}"
          + (f", GPU {machine['gpu']}" if cuda else "") + f", torch threads {machine['torch_threads']}")  # fmt: skip
    print("versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    print(liger_line)
    print(f"work folder: {workdir}")

    print(f"peak matmul: {peak['gflops_per_s']:.1f} GFLOP/s ({peak['what']}, {peak['threads']} threads)")

    report: dict = {
        "command": command,
        "machine": machine,
        "liger": liger_line,
        "settings": {
            k: v for k, v in vars(a).items() if k not in ("worker", "model_dir", "data", "output_dir", "with_liger")
        }
        | {"frameworks_run": frameworks, "pairs": n_pairs, "device": a.device},
        "peak_matmul": peak,
        "flops_definition": "6*N_nonembedding*tokens + 6*hidden*vocab*response_tokens + 6*layers*hidden*sum(len^2), "
        "x4/3 for reference-based losses (see the script's docstring)",
        "vocabs": {},
    }
    tables = []
    try:
        for vocab in a.vocab:
            print(f"\n=== vocab {vocab} ===", flush=True)
            model_dir = workdir / f"model-v{vocab}"
            model_dir.mkdir(parents=True, exist_ok=True)
            build_tokenizer(vocab, model_dir)
            model_info = build_model(vocab, model_dir, a.seed, a.max_len, cuda, model_shape(a))
            rows = make_pairs(n_pairs, vocab, a.min_len, a.max_len, a.seed)
            data = workdir / f"pairs-v{vocab}.jsonl"
            data.write_text("".join(json.dumps(row) + "\n" for row in rows))
            steps = step_token_stats(rows, a.batch, n_steps)
            data_info = {
                "model": model_info,
                "pairs": n_pairs,
                "steps": steps,
                "mean_pair_tokens": statistics.mean(pair_token_stats(r)["tokens"] for r in rows),
            }
            paths = {"model_dir": model_dir, "data": data}
            entry: dict = {"data": data_info, "runs": {name: [] for name in frameworks}}
            report["vocabs"][str(vocab)] = entry

            if not a.no_losscheck:
                print(f"[v{vocab}] losscheck ...", end=" ", flush=True)
                check = run_worker(a, "losscheck", vocab, paths, workdir, f"v{vocab}-losscheck")
                entry["losscheck"] = check
                print("ok" if check.get("ok") else f"FAILED: {check.get('error')}", flush=True)

            for round_index in range(a.rounds):
                shift = round_index % len(frameworks)
                for name in frameworks[shift:] + frameworks[:shift]:  # rotate the order between rounds
                    tag = f"v{vocab}-r{round_index + 1}-{name}"
                    print(f"[v{vocab} round {round_index + 1}/{a.rounds}] {name} ...", end=" ", flush=True)
                    result = run_worker(a, name, vocab, paths, workdir, tag)
                    entry["runs"][name].append(result)
                    if result.get("ok"):
                        times = result.get("step_times") or [float("nan")]
                        print(f"ok (median step {statistics.median(times):.3f} s, "
                              f"peak RSS {result['peak_rss'] / GB:.2f} GiB, {result['process_wall_s']:.0f} s)",
                              flush=True)  # fmt: skip
                    else:
                        print(f"FAILED: {result.get('error')}", flush=True)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(report, indent=1, default=str))  # partial results survive a crash

            summaries = {
                name: summarize(name, entry["runs"][name], steps, data_info, peak["flops_per_s"]) for name in frameworks
            }
            entry["summary"] = summaries
            lines = [
                f"### vocab {vocab}",
                "",
                f"{n_pairs} pairs, batch {a.batch}, {a.min_len}-{a.max_len} words per prompt+response "
                f"(mean {data_info['mean_pair_tokens']:.0f} tokens per pair), {a.warmup} warm-up + {a.steps} measured "
                f"steps x {a.rounds} rounds; {model_info['dtype']}; medians over measured steps; peak RSS: max over "
                f"rounds; MFU vs the measured {peak['gflops_per_s']:.1f} GFLOP/s",
                "",
                vocab_table(vocab, summaries, cuda),
                "",
            ]
            notes = loss_comparisons(summaries) + losscheck_lines(entry.get("losscheck")) + layout_lines(summaries)
            for name, s in summaries.items():
                notes += [f"warning: {name}: {w}" for w in s.get("warnings", [])]
                notes += [f"error: {name}: {e}" for e in s.get("errors", [])]
                for run in entry["runs"][name]:
                    notes += [f"note: {name}: {n}" for n in run.get("notes", [])]
            lines += sorted(set(notes), key=notes.index)
            table = "\n".join(lines)
            tables.append(table)
            print("\n" + table, flush=True)
    finally:
        header = [
            "## preference step benchmark",
            "",
            f"command: `{command}`",
            "",
            f"machine: {machine['cpu']}, {machine['cpus_usable']} usable CPUs, "
            + (f"GPU {machine['gpu']}, " if cuda else "")
            + f"{machine.get('ram_gb', '?')} GB RAM, torch threads {machine['torch_threads']}",
            "versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
            liger_line,
            f"peak matmul: {peak['gflops_per_s']:.1f} GFLOP/s ({peak['what']})",
            "",
        ]
        markdown = "\n".join(header) + "\n" + "\n\n".join(tables) + "\n"
        report["markdown"] = markdown
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str))
        out.with_suffix(".md").write_text(markdown)
        print(f"\nresults: {out} (and {out.with_suffix('.md').name})")
        if a.keep_workdir or a.workdir:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.worker:
        return worker_main(a)
    return parent_main(a)


if __name__ == "__main__":
    sys.exit(main())
