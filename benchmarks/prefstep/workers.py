"""A worker process: one framework (or the loss check, or the peak matmul measurement), one vocabulary.

The parent (``runner.py``) starts ``preference_step.py --worker NAME ...``; the worker runs, then prints one line
``PREFSTEP_RESULT {json}`` as its last output, whether it succeeded or not.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from .common import (
    AMAPO_FRAMEWORKS,
    GB,
    RESULT_MARKER,
    base_framework,
    framework_options,
    needs_liger,
    read_jsonl,
    worker_device,
)
from .frameworks import (
    autocast_for,
    build_amapo_config,
    collate_liger,
    cpo_config,
    liger_batches,
    liger_forward_loss,
    liger_loss_fn,
    load_json_dataset,
    load_model_and_tokenizer,
    run_amapo,
    run_liger,
    run_trl_cpo,
    run_trl_dpo,
)
from .measure import describe_batch, make_step_timer, measure_peak_flops, peak_rss_bytes
from .profile import make_profiler_callback
from .setup_only import SetupDone, check_amapo_kernels_as_on_cuda, install_liger_stand_ins, stop_at_first_step


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

    # amapo: run_training for one step; the logged loss of step 1 is compute_loss before any update, on the first
    # n pairs (sequential sampling). amapo refuses a learning rate of 0 (it trains nothing), so the run's own.
    try:
        from amapo.train.run import run_training

        timer = make_step_timer(0, cuda)
        config = build_amapo_config(
            a, "simpo", str(Path(a.output_dir) / "amapo"), batch=n, max_steps=1, learning_rate=a.lr
        )
        run_training(config, callbacks=[timer])
        if 1 in timer.losses:
            values["amapo-simpo logged step-1 (before any update)"] = timer.losses[1]
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
        if a.setup_only:  # prefstep/setup_only.py: as far as this machine allows, then stop at the first step
            result["setup_only"] = True
            if needs_liger(a.worker):
                result["notes"].append(install_liger_stand_ins())
            if base_framework(a.worker) in AMAPO_FRAMEWORKS:
                check_amapo_kernels_as_on_cuda()
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
            callbacks = [timer] + ([stop_at_first_step(result)] if a.setup_only else [])
            if a.profile_trace:  # gpu_profile.py: the last steps under torch.profiler
                callbacks.append(make_profiler_callback(a.profile_trace, a.warmup + a.steps, cuda))
            if base_framework(a.worker) in AMAPO_FRAMEWORKS:
                a.amapo_options = framework_options(a.worker)
                run_amapo(a, base_framework(a.worker), callbacks, result)
            elif a.worker in ("trl-cpo-simpo", "trl-cpo-simpo-liger"):
                run_trl_cpo(a, callbacks, result, liger=a.worker.endswith("-liger"))
            elif a.worker == "trl-dpo":
                run_trl_dpo(a, callbacks, result)
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
                memory_phases=timer.memory.phases,
            )
            if timer.counter.error:
                result["notes"].append(f"batch counter: {timer.counter.error}")
        result["ok"] = True
    except SetupDone as done:
        result["ok"], result["setup"] = True, str(done)
    except BaseException as e:  # report, never crash silently: the parent reads the marker line
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()[-4000:]
    phases = result.get("memory_phases") or {}
    result["peak_rss"] = max([peak_rss_bytes()] + [p["peak_rss"] for p in phases.values() if p.get("peak_rss")])
    result["wall_s"] = time.perf_counter() - start
    if cuda:
        result["cuda_max_allocated"] = max(
            [torch.cuda.max_memory_allocated()] + [p["cuda_max_allocated"] for p in phases.values()]
        )
    sys.stdout.flush()
    print("\n" + RESULT_MARKER + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1
