"""Every option that is amapo's own, declared once: the same names serve the YAML recipe, the CLI and Python.

``TrainOptions`` needs neither torch nor transformers' ``TrainingArguments`` (whose import takes seconds), so
``amapo train --help`` and the checks of these options run before anything heavy is imported.
``amapo.train.config.TrainConfig`` adds every ``TrainingArguments`` option (precision, schedule, ``report_to``,
DeepSpeed, ...) on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, make_dataclass
from typing import TYPE_CHECKING, Any

from amapo.attention_names import check_attn_implementation
from amapo.data.sources import check_named_set
from amapo.errors import UserError
from amapo.loss_options import scan_loss_options
from amapo.options_json import parse_json_mapping

if TYPE_CHECKING:
    from amapo.losses.base import PreferenceLoss

# Loss options exposed as top-level flags, read from the registered losses (``amapo.loss_options``); None means
# "the method's own default" (see ``amapo.losses``).
LOSS_OPTION_FIELDS = scan_loss_options()
LOSS_OPTIONS = tuple(LOSS_OPTION_FIELDS)
MARGIN_STATS = ("micro_batch", "all_ranks", "optimizer_step")
TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")
TRUNCATION_MODES = ("keep_end", "keep_start")
LM_HEAD_KERNELS = ("chunked", "compiled", "liger")  # amapo.model.lm_head
MESSAGE_ROLES = ("system", "user", "assistant", "tool")

# (low, high, rule) of numeric options; the rule's "> " or ")" makes that bound open (a learning rate of 0 trains
# nothing). Every numeric option must also be finite: --beta inf "trains" to accuracy 0 without an error.
BOUNDS: dict[str, tuple[float | None, float | None, str]] = {
    "learning_rate": (0, None, "> 0"),
    "per_device_train_batch_size": (1, None, ">= 1"),
    "per_device_eval_batch_size": (1, None, ">= 1"),
    "num_train_epochs": (0, None, "> 0"),
    "warmup_ratio": (0, 1, "in [0, 1]"),
    "logging_steps": (0, None, "> 0"),
    "save_steps": (0, None, "> 0"),
    "save_total_limit": (1, None, ">= 1"),
    "max_length": (1, None, ">= 1"),
    "max_prompt_length": (1, None, ">= 1"),
    "lm_head_chunk_size": (0, None, ">= 0"),
    "sequence_parallel_size": (1, None, ">= 1"),
    "lora_r": (1, None, ">= 1"),
    "lora_alpha": (0, None, "> 0"),
    "lora_dropout": (0, 1, "in [0, 1)"),
    "dataset_num_proc": (1, None, ">= 1"),
    "max_nonfinite_steps": (0, None, ">= 0"),
    "beta": (0, None, "> 0"),
    "gamma_beta_ratio": (0, None, ">= 0"),
    "nll_weight": (0, None, ">= 0"),
    "focal_gamma": (0, None, ">= 0"),
    # TrainingArguments' own (checked by TrainConfig, which has them)
    "gradient_accumulation_steps": (1, None, ">= 1"),
    "weight_decay": (0, None, ">= 0"),
    "max_grad_norm": (0, None, ">= 0"),
    "adam_epsilon": (0, None, "> 0"),
    "adam_beta1": (0, 1, "in [0, 1)"),
    "adam_beta2": (0, 1, "in [0, 1)"),
}


def check_number(name: str, value: Any) -> None:
    """UserError naming ``--name`` when a numeric ``value`` is not finite or breaks its rule in BOUNDS."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    if not math.isfinite(value):
        raise UserError(f"--{name} must be a finite number, got {value}")
    if name not in BOUNDS:
        return
    low, high, rule = BOUNDS[name]
    strict_low = rule.startswith("> ")
    strict_high = rule.endswith(")")
    bad = (low is not None and (value < low or (strict_low and value == low))) or (
        high is not None and (value > high or (strict_high and value == high))
    )
    if bad:
        raise UserError(f"--{name} must be {rule}, got {value}")


@dataclass
class TrainOptionsBase:
    """amapo's options of ``amapo train`` (model, data, loss, reliability) and the ``TrainingArguments``
    defaults that differ for preference training. ``check()`` validates them without importing torch."""

    # --- model ------------------------------------------------------------------------------------------------
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local folder of a causal LM (required unless a recipe sets it); 'builtin:tiny-llama' "
            "is the built-in tiny policy, with defaults that fit it."
        },
    )
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Reference model for reference-based methods (default: the initial policy). Never loaded "
            "for reference-free methods."
        },
    )
    precompute_ref_logps: bool = field(
        default=False,
        metadata={"help": "Compute reference log-probs once before training, then free the reference model."},
    )
    torch_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weights dtype when loading: float32, bfloat16, float16 or auto (the checkpoint's). Default: "
            "float32 when every weight is trained (AdamW's updates need an fp32 copy; add --bf16 true for bf16 "
            "compute), auto with LoRA."
        },
    )
    allow_low_precision_weights: bool = field(
        default=False,
        metadata={
            "help": "Train every weight stored in bf16/fp16 without an fp32 master copy (refused otherwise: small "
            "updates round away). DeepSpeed keeps fp32 master weights and needs no opt-in."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Set the model's dropout to 0 (as TRL and AMaPO's release do); LoRA dropout is kept."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel: eager, sdpa, flex_attention (every layout without a dense mask), "
            "flash_attention_2 (default: transformers')."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub. Off by default."})
    batch_layout: str = field(
        default="auto",
        metadata={
            "help": "How a batch of pairs is laid out for the forward pass: shared_prompt (prompt once per pair, "
            "needs eager, sdpa or flex_attention; on eager a dense [B, 1, T, T] mask, on sdpa none), packed (no "
            "padding on flash-attention or flex_attention; on eager/sdpa rows as wide as the longest sequence), "
            "padded, or auto (shared_prompt on sdpa and flex_attention, packed on flash-attention, on eager "
            "shared_prompt or padded per batch, whichever costs less memory at its lengths; padded otherwise)."
        },
    )
    lm_head_chunk_size: int = field(
        default=0,
        metadata={"help": "Response tokens per LM-head chunk (0: as many as keep a chunk's fp32 logits <= 128 MiB)."},
    )
    lm_head_kernel: str = field(
        default="chunked",
        metadata={
            "help": "How response log-probs leave the LM head without full logits: chunked (PyTorch, chunk by "
            "chunk), compiled (the same chunks through torch.compile, fused), liger (Liger-Kernel's fused linear "
            "cross-entropy, per token; CUDA)."
        },
    )
    lean_activations: bool = field(
        default=True,
        metadata={
            "help": "Keep fewer activations for backward in the RMSNorms and SwiGLU MLPs of Llama, Mistral and Qwen2/3 "
            "models, as Liger's kernels do, in PyTorch on any device, and rebuild the norms' outputs and the SwiGLU "
            "product in backward (about two fifths less activation memory; the same forward bit for bit). Off under "
            "--use_liger_kernel, whose kernels keep about as little."
        },
    )
    sequence_parallel_size: int = field(
        default=1,
        metadata={
            "help": "Processes that hold each micro-batch together, every one a slice of every sequence (DeepSpeed's "
            "Ulysses; launch with DeepSpeed, e.g. the packaged zero3.yaml). It must divide the processes; the others "
            "are data-parallel. Layouts: padded (sdpa, flex_attention, flash-attention) or packed (flash-attention)."
        },
    )
    chat_template: str | None = field(
        default=None, metadata={"help": "Chat template (Jinja string or .jinja path) overriding the tokenizer's."}
    )
    chat_rendering: str = field(
        default="amapo",
        metadata={
            "help": "How pairs become tokens: amapo (the prompt with the generation prompt, the response is the "
            "answer, EOS ends it) or handbook (alignment-handbook's, as AMaPO's and SimPO's released trainers: the "
            "assistant header is part of the response, an empty system message where the template has one, EOS "
            "appended, their truncation rule)."
        },
    )
    # --- LoRA -------------------------------------------------------------------------------------------------
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters (PEFT) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "Modules to adapt ('all-linear' = every linear)."}
    )
    # --- data -------------------------------------------------------------------------------------------------
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset name, or a local .json/.jsonl/.parquet/.csv file or folder (required unless a "
            "recipe sets it); 'builtin:reverse' is the built-in synthetic task."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_split: str = field(default="train", metadata={"help": "Training split, slicing allowed: 'train[:90%%]'."})
    dataset_shuffle_seed: int | None = field(
        default=None,
        metadata={
            "help": "Shuffle the rows of `dataset`'s train and eval splits once, before training, with datasets' "
            "Dataset.shuffle(seed): alignment-handbook's loader (AMaPO's and SimPO's releases) does so with seed 42, "
            "and their random sampler then drew from that order. Default: the file's order."
        },
    )
    eval_split: str | None = field(
        default=None, metadata={"help": "Split of `dataset` to evaluate on, e.g. 'test' or 'train[90%%:]'."}
    )
    eval_datasets: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra named eval sets, each 'NAME=SOURCE' or 'NAME=SOURCE@SPLIT'; 'none' clears them."},
    )
    column_mapping: str | None = field(
        default=None,
        metadata={"help": 'JSON mapping standard names to columns, dotted paths allowed: {"chosen": "response_j"}.'},
    )
    role_mapping: str | None = field(
        default=None,
        metadata={
            "help": 'JSON mapping of message roles to system/user/assistant/tool, e.g. {"human": "user", "gpt": '
            '"assistant"}; any other role is an error naming the row.'
        },
    )
    max_length: int = field(default=1024, metadata={"help": "Max tokens of prompt + response."})
    max_prompt_length: int = field(default=512, metadata={"help": "Max prompt tokens when truncation is needed."})
    truncation_mode: str = field(
        default="keep_end", metadata={"help": "Prompt truncation: keep_end (last tokens) or keep_start."}
    )
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenizing the dataset."})
    offset_column: str = field(default="offset", metadata={"help": "Dataset column with ODPO's per-pair offset."})
    # --- loss -------------------------------------------------------------------------------------------------
    method: str = field(
        default="amapo",
        metadata={"help": "Loss: amapo, amapo-released, simpo, dpo, ... (see `amapo.losses.available_losses()`)."},
    )
    margin_stats: str | None = field(
        default=None,
        metadata={
            "help": "Batch over which adaptive margins take mu/sigma: micro_batch (this device's; the default), "
            "all_ranks (every data-parallel rank's micro-batch, all-gathered) or optimizer_step (all ranks and all "
            "accumulation micro-batches: one extra no-grad forward per step). See also margin_pool_size."
        },
    )
    margin_pool_size: int = field(
        default=0,
        metadata={
            "help": "Take adaptive margins' mu/sigma over pools of exactly N pairs of the optimizer step, in the "
            "order the sampler drew them, however many processes and accumulation steps hold it (N must divide "
            "processes x per-device batch x accumulation steps). 0: off (margin_stats decides)."
        },
    )
    # --- reliability ------------------------------------------------------------------------------------------
    drop_invalid_rows: bool = field(
        default=False,
        metadata={
            "help": "Drop rows that fail validation (reported per reason) instead of stopping with an error "
            "that names the row, field and reason."
        },
    )
    max_nonfinite_steps: int = field(
        default=3,
        metadata={
            "help": "Stop after this many optimizer steps in a row with a non-finite loss or gradient (each is "
            "skipped and logged with its rows); the last good checkpoint stays. 0: never stop."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Resume from a checkpoint folder, or last (true means the same: the newest complete checkpoint-* "
            "in output_dir); refused if it was written with options that change what is trained."
        },
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already holds a run."}
    )
    # --- TrainingArguments defaults that differ for preference training ---------------------------------------
    output_dir: str | None = field(default="outputs/amapo", metadata={"help": "Where the model, metrics and card go."})
    learning_rate: float = field(default=5e-7, metadata={"help": "Peak learning rate (AdamW)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps for linear warm-up."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the training pairs."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Pairs per device per micro-batch."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Pairs per device per eval batch."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N optimizer steps."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoint schedule: no, steps or epoch."})
    save_steps: float = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most N checkpoints."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep dataset columns (the collator needs them)."}
    )
    train_sampling_strategy: str = field(
        default="random",
        metadata={
            "help": "Training sampler: random (default, as TRL and AMaPO's release), sequential, group_by_length "
            "(batches of similar length: less padding, but AMaPO's statistics then pool length-matched pairs) or "
            "batch_rebalance."
        },
    )

    def check(self) -> None:
        """Refuse values that cannot work, naming the option: bounds, finiteness, choices, JSON options."""
        for f in fields(TrainOptions):
            check_number(f.name, getattr(self, f.name))
        if self.truncation_mode not in TRUNCATION_MODES:
            raise UserError(
                f"--truncation_mode must be one of {', '.join(TRUNCATION_MODES)}, got {self.truncation_mode!r}"
            )
        if not self.max_prompt_length < self.max_length:
            raise UserError(
                f"need --max_prompt_length < --max_length, got max_prompt_length={self.max_prompt_length}, "
                f"max_length={self.max_length}"
            )
        if self.torch_dtype not in (None, *TORCH_DTYPES):
            raise UserError(f"--torch_dtype must be one of {', '.join(TORCH_DTYPES)}, got {self.torch_dtype!r}")
        check_attn_implementation(self.attn_implementation)
        if self.lm_head_kernel not in LM_HEAD_KERNELS:
            raise UserError(
                f"--lm_head_kernel must be one of {', '.join(LM_HEAD_KERNELS)}, got {self.lm_head_kernel!r}"
            )
        if self.margin_stats is not None and self.margin_stats not in MARGIN_STATS:
            raise UserError(f"--margin_stats must be one of {', '.join(MARGIN_STATS)}, got {self.margin_stats!r}")
        parse_json_mapping("column_mapping", self.column_mapping, '{"chosen": "response_j"}')
        roles = parse_json_mapping("role_mapping", self.role_mapping, '{"human": "user", "gpt": "assistant"}')
        for source, target in (roles or {}).items():
            if target not in MESSAGE_ROLES:
                raise UserError(
                    f"--role_mapping maps {source!r} to {target!r}, which is not a role chat templates know; "
                    f"map to one of {', '.join(MESSAGE_ROLES)}"
                )
        if self.eval_datasets == ["none"]:
            self.eval_datasets = []
        for entry in self.eval_datasets:
            check_named_set("eval_datasets", entry)
        if self.model_name_or_path is None:
            raise UserError(
                "no model: pass --model_name_or_path (a Hub id, a local folder, or builtin:tiny-llama) or a recipe "
                "with --config (see `amapo train --help`)"
            )
        if self.dataset is None:
            raise UserError("no dataset: pass --dataset (a Hub name or a local .jsonl/.json/.parquet/.csv file)")

    def column_mapping_dict(self) -> dict[str, str] | None:
        return parse_json_mapping("column_mapping", self.column_mapping, '{"chosen": "response_j"}')

    def role_mapping_dict(self) -> dict[str, str] | None:
        return parse_json_mapping("role_mapping", self.role_mapping, '{"human": "user", "gpt": "assistant"}')

    def check_method(self) -> None:
        """The method exists, takes the loss options given, and accepts their values; the rendering exists."""
        from amapo.data.collator import LAYOUTS  # torch: imported only once the cheap checks have passed
        from amapo.data.tokenization import check_rendering
        from amapo.losses import loss_spec

        if self.batch_layout not in ("auto", *LAYOUTS):
            raise UserError(f"--batch_layout must be one of auto, {', '.join(LAYOUTS)}, got {self.batch_layout!r}")
        check_rendering(self.chat_rendering)
        try:
            loss_spec(self.method)  # unknown method: a clear error listing the known ones
        except ValueError as err:
            raise UserError(f"--method: {err}") from None
        self.build_loss()  # an option the method does not take, or a bad value: a clear error now, not after loading

    def loss_options(self) -> dict[str, Any]:
        """The loss options set by the user, checked against what ``method`` accepts."""
        from amapo.losses import loss_spec

        chosen = {name: getattr(self, name) for name in LOSS_OPTIONS if getattr(self, name) is not None}
        accepted = set(loss_spec(self.method).defaults())
        unknown = sorted(set(chosen) - accepted)
        if unknown:
            raise UserError(
                f"option {', '.join('--' + u for u in unknown)} does not apply to method {self.method!r}; "
                f"it takes: {', '.join(sorted(accepted))}"
            )
        return chosen

    def build_loss(self, gather=None) -> PreferenceLoss:
        """The loss with this run's options; ``gather``: the pairs its batch statistics pool over
        (``amapo.losses.stats.margin_statistics``; None: the micro-batch)."""
        from amapo.losses import build_loss

        options = self.loss_options() | ({"gather": gather} if gather is not None else {})
        try:
            return build_loss(self.method, **options)
        except ValueError as err:  # a value the loss refuses, e.g. beta <= 0
            raise UserError(f"method {self.method!r}: {err}") from None

    def resolved_loss_options(self) -> dict[str, Any]:
        """Every option of the method, defaults included: what the run really used."""
        from amapo.losses import loss_spec

        return {**loss_spec(self.method).defaults(), **self.loss_options()}


# ``TrainOptionsBase`` plus one ``--option`` per loss option, typed and documented by the losses themselves.
TrainOptions = make_dataclass(
    "TrainOptions",
    [
        (option.name, option.type | None, field(default=None, metadata={"help": option.help}))
        for option in LOSS_OPTION_FIELDS.values()
    ],
    bases=(TrainOptionsBase,),
    namespace={"__doc__": TrainOptionsBase.__doc__, "__module__": __name__},
)
