"""The preference training step, on transformers' Trainer (accelerate, DeepSpeed, FSDP, checkpoints, trackers).

One step, for every method: one forward pass over chosen and rejected together, response log-probs, the
reference log-probs if the loss asks for them, then the loss from ``amapo.losses``. The loss tells the step
what it needs (``needs_reference``, ``needs_offsets``); the step never asks which method it is.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections import defaultdict
from pathlib import Path

import torch
from accelerate.utils import gather_object
from transformers import Trainer

from amapo.hf_internals import CHECKPOINT_PREFIX, check_trainer_hooks
from amapo.losses import LossOutput, PreferenceInputs, PreferenceLoss
from amapo.losses.stats import StepStatistics
from amapo.model.logps import REFERENCE_COLUMNS, enable_response_logps, sequence_logps
from amapo.train.fingerprint import write_data_record
from amapo.train.reliability import NonFiniteGuard, mark_checkpoint_complete, rotate_checkpoints
from amapo.train.report import write_resolved_config
from amapo.train.sequence_parallel import SequenceParallel, local_batch

check_trainer_hooks(Trainer)  # the transformers internals PreferenceTrainer overrides are there, as it expects


class MetricStore:
    """Pair-weighted running means of per-batch metrics, reduced across processes when read."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._weights: dict[str, float] = defaultdict(float)

    def add(self, metrics: dict[str, float], weight: int) -> None:
        for key, value in metrics.items():
            self._sums[key] += value * weight
            self._weights[key] += weight

    def drain(self, accelerator) -> dict[str, float]:
        """Means since the last drain (over all processes), then forget them."""
        keys = sorted(self._sums)
        if accelerator.num_processes > 1:  # ranks may hold different keys (a group absent from a shard)
            keys = sorted(set().union(*gather_object([keys])))
        if not keys:
            return {}
        totals = torch.tensor(
            [[self._sums.get(k, 0.0), self._weights.get(k, 0.0)] for k in keys], device=accelerator.device
        )
        if accelerator.num_processes > 1:
            totals = accelerator.reduce(totals, reduction="sum")
        self._sums.clear()
        self._weights.clear()
        return {k: (s / w).item() for k, (s, w) in zip(keys, totals, strict=True) if w > 0}


class PreferenceTrainer(Trainer):
    """transformers.Trainer with the preference step as its loss.

    Gradient accumulation: ``compute_loss`` returns the mean over this micro-batch's pairs, and the Trainer
    divides it by the accumulation steps (``loss_is_scaled_for_ga = False``), so k micro-batches of n pairs give
    the gradient of one batch of k*n pairs (tested), not k times it (transformers #35651, TRL #2615).
    """

    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args,
        loss_fn: PreferenceLoss,
        step_statistics: StepStatistics | None = None,
        lm_head_chunk_size: int = 0,
        lm_head_kernel: str = "chunked",
        ref_model: torch.nn.Module | None = None,
        nonfinite_guard: NonFiniteGuard | None = None,
        data_record: dict | None = None,
        sequence_parallel: SequenceParallel | None = None,
        **kwargs,
    ):
        """``loss_fn`` comes built with its ``gather`` (``margin_statistics``); ``step_statistics`` is that gather's
        source when the statistics span the optimizer step (the trainer fills it before each step);
        ``lm_head_chunk_size``: tokens per LM-head chunk (0: 128 MiB of fp32 logits); ``lm_head_kernel``: chunked,
        compiled or liger (``amapo.model.lm_head``); ``data_record``: the training rows' fingerprint, written into
        each checkpoint (``amapo.train.fingerprint``); ``sequence_parallel``: the Ulysses group that holds each
        training batch together (``amapo.train.sequence_parallel``), None without sequence parallelism."""
        self.nonfinite_guard = nonfinite_guard  # before super().__init__, which may create the optimizer
        if kwargs.get("model") is not None:  # before the Trainer wraps it (DDP, FSDP, DeepSpeed)
            enable_response_logps(kwargs["model"], lm_head_chunk_size, lm_head_kernel)
        if ref_model is not None:
            enable_response_logps(ref_model, lm_head_chunk_size, lm_head_kernel)
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.loss_fn = loss_fn.to(self.args.device)
        self.step_statistics = step_statistics
        self.ref_model = None
        if ref_model is not None:
            self.ref_model = self.prepared_reference(ref_model)
        self._metrics = {"train": MetricStore(), "eval": MetricStore()}
        self.run_loss = RunLoss(self.args.device)
        self.data_record = data_record
        self.sequence_parallel = sequence_parallel

    def prepared_reference(self, ref_model: torch.nn.Module) -> torch.nn.Module:
        """The frozen reference on this run's devices; under ZeRO-3 in a DeepSpeed engine of its own.

        ZeRO-3 loads every model in shards (``zero.Init``), and only an engine gathers a module's weights around its
        forward: accelerate's ``prepare_model`` leaves the reference a shard on each rank (an embedding of 0 rows).
        Its own engine, without optimizer, keeps it sharded (as TRL's ``prepare_deepspeed`` does); every rank calls
        it in step, as it does the policy. Stages 0-2 hold whole weights: the reference is only moved.
        """
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None or plugin.zero_stage != 3:
            return self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        import deepspeed

        engine, *_ = deepspeed.initialize(model=ref_model, config=inference_config(plugin.deepspeed_config, ref_model))
        engine.eval()
        return engine

    def steps_taken(self) -> int:
        """Optimizer steps taken in this session (skipped non-finite ones not counted)."""
        guard = self.nonfinite_guard
        if guard is None:  # (no guard: every step counts; a run without one is not resumed)
            return self.state.global_step
        return guard.attempted - guard.skipped

    def create_optimizer(self, *args, **kwargs):  # transformers 5.0 takes no argument, 5.24 the model
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.nonfinite_guard is not None:
            self.nonfinite_guard.wrap(optimizer, step_number=lambda: self.state.global_step + 1)
        return optimizer

    def get_train_dataloader(self):
        """The Trainer's loader; under sequence parallelism each batch dealt as slices over the SP group."""
        dataloader = super().get_train_dataloader()
        if self.sequence_parallel is None:
            return dataloader
        return self.sequence_parallel.adapt(dataloader, self.args.device)

    def get_total_train_batch_size(self, args) -> int:
        """Pairs per optimizer step: the SP group holds one micro-batch, so data-parallel ranks are world / SP."""
        size = super().get_total_train_batch_size(args)
        return size // self.sequence_parallel.size if self.sequence_parallel is not None else size

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the step's micro-batches; for statistics over the optimizer step, score all of them first.

        None once the run has taken its last step: transformers' loop asks for max_steps only after a step, so a
        run resumed from the checkpoint of its own last step (what a failed final save leaves) trained one step
        more than it was given (step N+1 of N, transformers 5.23-5.25); it now takes none and saves again."""
        if self.state.global_step >= self.state.max_steps > 0:
            self.control.should_training_stop = True
            return [], None
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.step_statistics is not None and batch_samples:
            values = self.step_statistic_values(batch_samples)
            if values:
                self.step_statistics.set(values)
        return batch_samples, num_items_in_batch

    @torch.no_grad()
    def step_statistic_values(self, batches: list[dict]) -> list[torch.Tensor]:
        """The loss's batch statistic of every pair of this rank's micro-batches, one tensor per micro-batch
        (none if the loss has no batch statistics)."""
        values = []
        for batch in batches:
            inputs, sliced = self.unpacked(self._prepare_inputs(batch))
            x = self.pair_inputs(self.model_wrapped, inputs, sliced).at_least_fp32()
            value = self.loss_fn.batch_statistic(self.loss_fn.scores_of(x), x)
            if value is None:
                return []
            values.append(value)
        return values

    # --- the step ---------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out, metrics = self.preference_step(model, inputs)
        if model.training:
            self.run_loss.add(out.loss, getattr(self, "current_gradient_accumulation_steps", None)
                              or self.args.gradient_accumulation_steps)  # fmt: skip
        mode = "train" if model.training else "eval"
        self._metrics[mode].add(metrics, weight=out.losses.shape[0])
        return (out.loss, out) if return_outputs else out.loss

    def unpacked(self, inputs: dict) -> tuple[dict, bool]:
        """(the batch in the collator's form, whether it is this rank's slice of sequences the SP group shares)."""
        if self.sequence_parallel is None:
            return inputs, False
        return local_batch(inputs)

    def sequence_logps(self, model, inputs: dict, sliced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole sequences' summed response log-probs and lengths (reduced over the SP group for a slice)."""
        if self.sequence_parallel is None:
            return sequence_logps(model, inputs)
        return self.sequence_parallel.sequence_logps(model, inputs, sliced)

    def pair_inputs(self, model, inputs: dict[str, torch.Tensor], sliced: bool = False) -> PreferenceInputs:
        """The loss's inputs for a collated batch: policy log-probs (one forward pass), reference, offsets."""
        logps, lengths = self.sequence_logps(model, inputs, sliced)
        n = logps.shape[0] // 2  # sequences [0, n) are prompt + chosen, [n, 2n) prompt + rejected
        ref_chosen, ref_rejected = self.reference_logps(model, inputs, sliced)
        return PreferenceInputs(
            chosen_logps=logps[:n],
            rejected_logps=logps[n:],
            chosen_lengths=lengths[:n],
            rejected_lengths=lengths[n:],
            ref_chosen_logps=ref_chosen,
            ref_rejected_logps=ref_rejected,
            offsets=inputs.get("offset") if self.loss_fn.needs_offsets else None,
        )

    def preference_step(self, model, inputs: dict[str, torch.Tensor]) -> tuple[LossOutput, dict[str, float]]:
        inputs, sliced = self.unpacked(inputs)
        x = self.pair_inputs(model, inputs, sliced)
        self.loss_fn.train(model.training)  # running statistics (alpha-DPO) advance only in training
        if self.step_statistics is not None:
            self.step_statistics.active = model.training
        out = self.loss_fn(x)
        if model.training and self.nonfinite_guard is not None:  # which input or term was not finite, if any
            terms = {"chosen_logps": x.chosen_logps, "rejected_logps": x.rejected_logps,
                     "ref_chosen_logps": x.ref_chosen_logps, "ref_rejected_logps": x.ref_rejected_logps,
                     "offset": x.offsets, "margin": out.margins, "loss": out.losses}  # fmt: skip
            self.nonfinite_guard.note_batch(out.loss, inputs.get("row_index"), terms)
        metrics = out.metrics()
        metrics.update(
            {
                "logps/chosen": x.chosen_logps.detach().mean().item(),
                "logps/rejected": x.rejected_logps.detach().mean().item(),
                "length/chosen": x.chosen_lengths.mean().item(),
                "length/rejected": x.rejected_lengths.mean().item(),
            }
        )
        return out, metrics

    def reference_logps(self, model, inputs, sliced: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Precomputed columns if the batch has them, else the frozen reference (or the adapter-free policy)."""
        if not self.loss_fn.needs_reference:
            return None, None
        if all(c in inputs for c in REFERENCE_COLUMNS):
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        with torch.no_grad():
            if self.ref_model is not None:
                logps, _ = self.sequence_logps(self.ref_model, inputs, sliced)
            else:  # LoRA: the reference is the base model, i.e. the policy with its adapters switched off
                unwrapped = self.accelerator.unwrap_model(model)
                with unwrapped.disable_adapter() if hasattr(unwrapped, "disable_adapter") else contextlib.nullcontext():
                    logps, _ = self.sequence_logps(model, inputs, sliced)
        n = logps.shape[0] // 2
        return logps[:n], logps[n:]

    # --- checkpoints --------------------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial) -> None:
        """Write a checkpoint as the Trainer does, complete it (this run's options, the loss's state, the marker),
        and only then delete old ones (``save_total_limit``).

        The Trainer deletes old checkpoints at the end of ``_save_checkpoint``, before any ``on_save`` callback
        could mark the new one complete: with ``save_total_limit 1`` a kill in between left no complete
        checkpoint. So its own rotation is switched off for the call (there is no public hook in between; the
        checkpoint's training_args.bin records save_total_limit as None).
        """
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        run_loss_total = self.run_loss.averaged(self.accelerator)  # (a collective: every rank, before the marker)
        self.accelerator.wait_for_everyone()  # every rank's part written (DeepSpeed, FSDP) before the marker
        if self.args.should_save:
            folder = Path(self.args.output_dir) / f"{CHECKPOINT_PREFIX}-{self.state.global_step}"
            write_resolved_config(self.args, folder)  # a resume checks its options against this run's
            write_data_record(folder, self.data_record)  # ... and its training rows (``fingerprint``)
            steps_taken = self.run_loss.restored_steps + self.steps_taken()
            self.run_loss.save(folder, run_loss_total, steps_taken)
            mark_checkpoint_complete(folder, self.loss_fn)
            rotate_checkpoints(folder.parent, limit, newest=folder, keep=self.state.best_model_checkpoint)

    # --- evaluation and logging -------------------------------------------------------------------------------

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        for key, value in self._metrics["eval"].drain(self.accelerator).items():
            output.metrics.setdefault(f"{metric_key_prefix}_{key}", value)
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the step's preference metrics under TRL's names
            drained = self._metrics["train"].drain(self.accelerator)
            logs.update({k: v for k, v in drained.items() if k not in logs})  # keep the Trainer's GA-aware loss
        super().log(logs, start_time)


def inference_config(config: dict, model: torch.nn.Module) -> dict:
    """A training run's DeepSpeed config for an engine that only runs forward passes (the reference): no optimizer,
    scheduler or optimizer offload, and the sizes left ``auto`` (the Trainer fills them for its own engine only)
    from the model's hidden size, as transformers' ``trainer_config_finalize`` does."""
    config = copy.deepcopy(config)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    zero = config.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    hidden = model.config.get_text_config().hidden_size
    sizes = {"reduce_bucket_size": hidden * hidden, "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
             "stage3_param_persistence_threshold": 10 * hidden}  # fmt: skip
    zero.update({k: v for k, v in sizes.items() if zero.get(k) == "auto"})
    return config


class RunLoss:
    """The training loss of the whole run, as the Trainer's ``train_loss`` defines it (the mean over optimizer steps
    of each step's loss, a step's loss the sum of its micro-batches' loss / accumulation steps), carried through
    checkpoints so that a resumed run reports the whole run, not only the part after the resume. Non-finite
    micro-batches (skipped steps) are left out. A device tensor until read: no sync per step."""

    FILE = "run_loss.json"

    def __init__(self, device) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.restored_steps = 0  # optimizer steps before the resume

    def add(self, loss: torch.Tensor, accumulation_steps: int) -> None:
        value = loss.detach().to(self.total.dtype) / accumulation_steps
        self.total += torch.where(torch.isfinite(value), value, torch.zeros_like(value))

    def averaged(self, accelerator) -> float:
        """The sum so far, averaged over the data-parallel ranks (every rank must call it)."""
        if accelerator.num_processes > 1:
            return float(accelerator.reduce(self.total.clone(), reduction="mean"))
        return float(self.total)

    def mean(self, accelerator, steps_this_session: int) -> float | None:
        steps = self.restored_steps + steps_this_session
        return self.averaged(accelerator) / steps if steps else None

    def save(self, folder: Path, total: float, steps: int) -> None:
        (Path(folder) / self.FILE).write_text(json.dumps({"total": total, "steps": steps}) + "\n")

    def load(self, checkpoint: str | Path | None) -> None:
        """Continue the run of ``checkpoint``: its (rank-averaged) sum and step count."""
        path = Path(checkpoint) / self.FILE if checkpoint else None
        if path is not None and path.is_file():
            state = json.loads(path.read_text())
            self.total.fill_(state["total"])
            self.restored_steps = int(state["steps"])


class RowIndexCollator:
    """Wraps a collator to carry each pair's dataset row (``row_index``), so a bad step can name its rows."""

    def __init__(self, collator) -> None:
        self.collator = collator

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        if "row_index" in features[0]:
            batch["row_index"] = torch.tensor([f["row_index"] for f in features], dtype=torch.long)
        return batch
