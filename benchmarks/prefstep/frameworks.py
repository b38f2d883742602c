"""One training run per implementation, all with the same settings (``preference_step.py``'s docstring, "What
runs"): amapo's ``run_training``, TRL's ``CPOTrainer`` and ``DPOTrainer``, and a hand-written loop around Liger's
``LigerFusedLinearSimPOLoss``. Each runs inside a worker process (``workers.py``).
"""

from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path

from .common import (
    AMAPO_FRAMEWORKS,
    AMAPO_OPTIONS,
    DPO_BETA,
    MAX_LENGTH_SLACK,
    SIMPO_BETA,
    SIMPO_GAMMA,
    read_jsonl,
    worker_device,
)
from .measure import MemoryPhases, current_rss_bytes, describe_batch


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
        "gradient_checkpointing": bool(getattr(a, "gradient_checkpointing", False)),
        "train_sampling_strategy": "sequential",
    }


def build_amapo_config(a, method: str, output_dir: str, *, batch: int, max_steps: int, learning_rate: float):
    """amapo's TrainConfig with the shared settings, the method's beta (and SimPO's gamma), and --amapo_* options."""
    from amapo.train.config import TrainConfig

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
    for option in getattr(a, "amapo_options", ()):
        kwargs.update(AMAPO_OPTIONS[option])
    if a.amapo_layout is not None:
        kwargs["batch_layout"] = a.amapo_layout
    if a.amapo_lm_head_chunk_size is not None:
        kwargs["lm_head_chunk_size"] = a.amapo_lm_head_chunk_size
    return TrainConfig(**kwargs)


def run_amapo(a, framework: str, callbacks: list, result: dict) -> None:
    import amapo
    from amapo.train.run import run_training

    result["amapo_source"] = str(Path(amapo.__file__).resolve().parents[1])  # this checkout's src, or a baseline's
    config = build_amapo_config(
        a, AMAPO_FRAMEWORKS[framework], a.output_dir, batch=a.batch, max_steps=a.warmup + a.steps, learning_rate=a.lr
    )
    result["settings"] = {
        name: getattr(config, name, None)  # None: an option a --amapo_baseline commit does not have
        for name in ("method", "beta", "gamma_beta_ratio", "batch_layout", "lm_head_chunk_size", "lm_head_kernel",
                     "attn_implementation", "use_liger_kernel", "torch_compile")
    }  # fmt: skip
    result["settings"]["optim"] = str(config.optim)
    run_training(config, callbacks=callbacks)


def load_json_dataset(path: str):
    from datasets import load_dataset

    return load_dataset("json", data_files=path, split="train")


def cpo_config(a, output_dir: str, *, batch: int, max_steps: int, learning_rate: float, liger: bool = False):
    """TRL's CPOConfig for pure SimPO; ``liger``: ``use_liger_kernel=True``, which puts Liger's RMSNorm, SwiGLU and RoPE
    kernels (and its cross-entropy forward, unused without labels) into the model when training starts."""
    from trl.experimental.cpo import CPOConfig

    return CPOConfig(
        use_liger_kernel=liger,
        **common_training_kwargs(a, output_dir, batch=batch, max_steps=max_steps, learning_rate=learning_rate),
        warmup_steps=0,
        loss_type="simpo",
        cpo_alpha=0.0,  # no NLL term: pure SimPO
        beta=SIMPO_BETA,
        simpo_gamma=SIMPO_GAMMA,  # absolute margin (TRL subtracts simpo_gamma / beta from the log-ratio)
        max_length=a.max_len + MAX_LENGTH_SLACK,
        remove_unused_columns=False,
    )


def run_trl_cpo(a, callbacks: list, result: dict, liger: bool = False) -> None:
    from trl.experimental.cpo import CPOTrainer

    model, tokenizer = load_model_and_tokenizer(a)
    args = cpo_config(a, a.output_dir, batch=a.batch, max_steps=a.warmup + a.steps, learning_rate=a.lr, liger=liger)
    result["settings"] = {
        "use_liger_kernel": args.use_liger_kernel,
        "loss_type": args.loss_type,
        "cpo_alpha": args.cpo_alpha,
        "beta": args.beta,
        "simpo_gamma": args.simpo_gamma,
        "max_length": args.max_length,
        "gradient_checkpointing": args.gradient_checkpointing,
        "optim": str(args.optim),
    }
    trainer = CPOTrainer(
        model=model, args=args, train_dataset=load_json_dataset(a.data), processing_class=tokenizer, callbacks=callbacks
    )
    trainer.train()


def run_trl_dpo(a, callbacks: list, result: dict) -> None:
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
        callbacks=callbacks,
    )
    result["settings"]["fused_lm_head"] = head = watch_fused_lm_head(trainer.model, trainer.args.device)
    try:
        trainer.train()
    finally:
        head["calls_with_fused_lm_head"] = head.pop("_calls")[0]


def watch_fused_lm_head(model, device) -> dict:
    """TRL 1.15+ gives ``DPOTrainer`` a fused LM head by default: ``add_fused_lm_head`` replaces the policy's
    ``forward`` with TRL's ``_fused_forward``, which the loss calls with ``fused_lm_head=True`` (per-token log-probs in
    tiles, no full logits; a Triton kernel on CUDA). Records whether the forward was replaced, whether TRL takes its
    Triton path on the training device, and (counted while training) how many policy forwards asked for the head."""
    forward = model.forward
    code = getattr(getattr(forward, "__func__", forward), "__code__", None)  # (functools.wraps keeps the name)
    head = {"patched": code is not None and code.co_name == "_fused_forward"}
    try:
        from trl.kernels.chunked_logprob import _use_triton  # TRL's own test for its Triton path (private)

        head["triton"] = bool(_use_triton(device))
    except ImportError:
        head["triton"] = None
    calls = head["_calls"] = [0]

    @functools.wraps(forward)  # the Trainer reads forward's signature to choose the dataset's columns
    def counting_forward(*args, **kwargs):
        calls[0] += bool(kwargs.get("fused_lm_head"))
        return forward(*args, **kwargs)

    model.forward = counting_forward
    return head


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
    kwargs = common_training_kwargs(a, a.output_dir, batch=a.batch, max_steps=n_steps, learning_rate=a.lr)
    del kwargs["train_sampling_strategy"]  # the loop takes its batches in data order itself
    targs = TrainingArguments(**kwargs)
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

    if getattr(a, "setup_only", False):  # prefstep/setup_only.py: model, batches, optimizer, loss built; stop here
        from .setup_only import SetupDone

        result["first_batch"] = describe_batch(collate_liger(batches[0], tokenizer.pad_token_id, device))
        raise SetupDone("set-up ok: stopped before the first step")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    record = {"step_times": [], "measured_steps": [], "losses": {}, "batches": []}
    memory = MemoryPhases(device.type == "cuda")
    sync()
    record["rss_before_train"] = current_rss_bytes()
    if device.type == "cuda":
        record["cuda_allocated_before_train"] = torch.cuda.memory_allocated()
    memory.end("setup")
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
        if k == 0:
            memory.end("first_step")
    if len(batches) > 1:
        memory.end("steady")
    record["memory_phases"] = memory.phases
    return record
