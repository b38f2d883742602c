"""Every option of ``amapo train``: amapo's own (``amapo.train.options``) on top of transformers' ``TrainingArguments``
(learning rate schedule, precision, checkpointing, ``report_to``, DeepSpeed, ...). ``amapo train --help-all``
lists all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from transformers import TrainingArguments

from amapo.errors import UserError
from amapo.losses import loss_spec
from amapo.train.options import TrainOptions, check_number
from amapo.train.sequence_parallel import check_options as check_sequence_parallel
from amapo.train.sequence_parallel import deepspeed_enabled


@dataclass
class TrainConfig(TrainOptions, TrainingArguments):
    """``TrainOptions`` + ``TrainingArguments``; building one validates every option, before anything loads."""

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ValueError as err:  # transformers' own option checks (e.g. bf16 on a machine without support)
            raise UserError(" ".join(str(err).split())) from None
        self.check()
        self.check_method()
        self.liger_without_its_loss()
        for f in fields(TrainingArguments):  # transformers' own options: finite, and in range where BOUNDS says
            check_number(f.name, getattr(self, f.name))
        if self.max_steps != -1 and self.max_steps < 1:
            raise UserError(f"--max_steps must be -1 (off) or > 0, got {self.max_steps}")
        self.margin_pool()  # a pool size that cannot work: a clear error now
        check_sequence_parallel(self.sequence_parallel_size, self.world_size, deepspeed_enabled(self))

    def liger_without_its_loss(self) -> None:
        """``--use_liger_kernel``: Liger's RMSNorm, SwiGLU and RoPE kernels only. Its fused linear cross-entropy
        would replace the model's forward, and with it amapo's response log-probs (as in TRL's DPOTrainer)."""
        if not self.use_liger_kernel:
            return
        config = dict(self.liger_kernel_config or {})
        loss_kernels = [k for k in ("fused_linear_cross_entropy", "cross_entropy") if config.get(k)]
        if loss_kernels:
            raise UserError(
                f"--liger_kernel_config turns on {', '.join(loss_kernels)}, which replaces the model's forward and "
                "with it amapo's response log-probs; for a fused LM head use --lm_head_kernel liger"
            )
        self.liger_kernel_config = {**config, "fused_linear_cross_entropy": False, "cross_entropy": False}

    def margin_pool(self) -> tuple[str, int | None]:
        """(which batch the loss's statistics see, the pool size cut from it or None for all of it).

        ``margin_pool_size`` N picks the smallest batch that holds whole pools: this micro-batch when N divides
        the per-device batch, every rank's micro-batch when N divides processes x per-device batch, else the
        whole optimizer step (one extra no-grad forward per step), which N must divide.
        """
        size = self.margin_pool_size
        if size == 0:
            return self.margin_stats or "micro_batch", None
        if size < 0:
            raise UserError(f"--margin_pool_size must be >= 1 (or 0: off), got {size}")
        if self.margin_stats is not None:
            raise UserError(
                f"--margin_stats {self.margin_stats} and --margin_pool_size {size} both choose the pairs AMaPO's "
                "statistics pool: give one of them"
            )
        if not loss_spec(self.method).cls.margin_from_pool_statistics:
            raise UserError(
                f"--margin_pool_size applies to margins taken from batch statistics (amapo, amapo-released and "
                f"the ablations); method {self.method!r} has none"
            )
        processes, per_device = self.data_parallel_size(), self.per_device_train_batch_size
        steps = self.gradient_accumulation_steps
        for scope, held in (("micro_batch", per_device), ("all_ranks", processes * per_device)):
            if held % size == 0:
                return scope, (None if held == size else size)
        total = processes * per_device * steps
        if total % size:
            divisors = [d for d in range(1, total + 1) if total % d == 0]
            plural = lambda n, word: f"{n} {word}" + ("es" if word.endswith("s") else "s") * (n != 1)  # noqa: E731
            raise UserError(
                f"--margin_pool_size {size} does not divide the {total} pairs of an optimizer step "
                f"({plural(processes, 'process')} x {plural(per_device, 'pair')} x "
                f"{plural(steps, 'accumulation step')}); use one of {divisors}, or change the batch size or "
                "accumulation steps"
            )
        return "optimizer_step", (None if total == size else size)

    def data_parallel_size(self) -> int:
        """Processes that hold different pairs: all of them, or one per sequence-parallel group."""
        return max(1, self.world_size // max(1, self.sequence_parallel_size))

    def model_options(self) -> dict:
        """``amapo.model.loading.load_model``'s options for this run's policy and reference."""
        return {
            "dtype": self.load_dtype(),
            "attn_implementation": self.attn_implementation,
            "trust_remote_code": self.trust_remote_code,
        }

    def load_dtype(self) -> str:
        """The dtype the weights are loaded in (``torch_dtype``, or its default for full training vs LoRA)."""
        if self.torch_dtype is not None:
            return self.torch_dtype
        return "auto" if self.use_peft else "float32"
