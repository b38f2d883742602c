"""``amapo train`` end to end: load, tokenize, train, evaluate, save. One function, read top to bottom."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from collections import Counter
from pathlib import Path

import torch
from transformers import set_seed
from transformers.trainer_callback import ProgressCallback

from amapo.attention_names import check_attention_installed
from amapo.builtin import resolve_source
from amapo.cpu_memory import return_freed_tensors_to_the_system
from amapo.data import PreferenceCollator, load_preference_dataset, tokenize_dataset
from amapo.data.collator import device_batches, row_length
from amapo.data.formats import NUMERIC_FIELDS
from amapo.data.invalid import describe
from amapo.data.sources import check_local_path, parse_named_set
from amapo.errors import UserError
from amapo.losses.stats import margin_statistics
from amapo.model.layouts import DenseMaskCost, collator_options, layout_for
from amapo.model.lean_activations import apply_lean_activations
from amapo.model.lm_head import LogitTransform, check_kernel
from amapo.model.loading import check_positions, load_model, load_model_config, load_tokenizer
from amapo.model.logps import REFERENCE_COLUMNS, enable_response_logps, sequence_logps
from amapo.run_files import METRICS_FILE, RESULTS_FILE
from amapo.train import sequence_parallel
from amapo.train.callbacks import JsonlMetricsCallback, LiveProgressCallback, SavedFileModesCallback
from amapo.train.config import TrainConfig
from amapo.train.fingerprint import data_record
from amapo.train.health import check_health
from amapo.train.precision import check_trained_weights, check_weight_dtype
from amapo.train.reliability import (
    NONFINITE_FILE,
    CheckpointStateCallback,
    EngineSkipCallback,
    InterruptCallback,
    NonFiniteGuard,
    NonFiniteStepError,
    NonFiniteStopCallback,
    ResumeNote,
    last_complete_checkpoint,
    tied_weights_not_reported_missing,
)
from amapo.train.report import fix_saved_file_modes, print_summary, write_model_card, write_resolved_config
from amapo.train.results import TrainResult
from amapo.train.run_folder import RunLock, check_output_dir, check_resumable, check_resumed_data, remove_previous_run
from amapo.train.saving import FinalSave, SaveSizes, check_free_space, saves_a_checkpoint, stop_if_out_of_space
from amapo.train.trainer import PreferenceTrainer, RowIndexCollator

logger = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """SIGINT / SIGTERM stopped the run after saving a checkpoint."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signum, self.checkpoint = signum, checkpoint
        if checkpoint is None:  # (save_strategy no, or a stop before the first save)
            super().__init__("interrupted before any checkpoint was saved: nothing to resume; start the run again")
        else:
            super().__init__(
                f"interrupted: checkpoint saved at {checkpoint}; resume with --resume_from_checkpoint last"
            )


def disable_dropout(model) -> None:
    """Dropout off (as TRL's and AMaPO's trainers do): a statistics pre-pass and the step then see the same scores."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def apply_lora(model, config: TrainConfig):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("use_peft needs PEFT: pip install 'amapo[peft]'") from None
    if config.activation_checkpointing:
        model.enable_input_require_grads()  # checkpointed frozen embeddings would otherwise cut the graph
    targets = config.lora_target_modules
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def prepare_split(
    source: str,
    split: str,
    tokenizer,
    config: TrainConfig,
    needs_offsets: bool,
    dropped: Counter | None = None,
    layout: str = "padded",
):
    """Load one split in the standard form, tokenize it, and add the length column used to group batches.

    ``length`` is a pair's row length in the batch ``layout`` (``amapo.data.collator.row_length``).
    With ``drop_invalid_rows`` the rows that fail validation are dropped and counted per reason in ``dropped``.
    """
    dropped = Counter() if dropped is None else dropped
    dataset = load_preference_dataset(
        resolve_source(source),
        split=split,
        dataset_config=config.dataset_config,
        column_mapping=config.column_mapping_dict(),
        drop_invalid=config.drop_invalid_rows,
        dropped=dropped,
        role_mapping=config.role_mapping_dict(),
        numeric_fields=numeric_fields(config),
    )
    if needs_offsets:
        if config.offset_column not in dataset.column_names:
            raise UserError(
                f"method {config.method!r} needs a per-pair offset column {config.offset_column!r} in {source}; "
                f"columns: {', '.join(dataset.column_names)} (set --offset_column)"
            )
        if config.offset_column != "offset":
            dataset = dataset.rename_column(config.offset_column, "offset")
    with config.main_process_first(desc=f"tokenizing {source}"):
        dataset = tokenize_dataset(
            dataset,
            tokenizer,
            max_length=config.max_length,
            max_prompt_length=config.max_prompt_length,
            truncation_mode=config.truncation_mode,
            chat_template=config.chat_template and tokenizer.chat_template,
            num_proc=config.dataset_num_proc,
            drop_invalid=config.drop_invalid_rows,
            dropped=dropped,
            rendering=config.chat_rendering,
            name=f"{source}@{split}",
        )
    if dropped:
        print(f"amapo: {source}@{split}: dropped {sum(dropped.values())} invalid rows: {describe(dropped)}")
    return dataset.map(
        lambda row, index: {
            "length": row_length(
                layout, len(row["prompt_input_ids"]), len(row["chosen_input_ids"]), len(row["rejected_input_ids"])
            ),
            "row_index": row.get("row_index", index),  # the source row, for messages about a bad step
        },
        with_indices=True,
    )


def numeric_fields(options) -> tuple[str, ...]:
    """The columns whose values a loss reads as numbers: reference log-probs, the offset (``--offset_column``)."""
    return tuple(dict.fromkeys((*NUMERIC_FIELDS, options.offset_column)))


def shuffled(dataset, seed: int | None):
    """``dataset`` in the order ``Dataset.shuffle(seed)`` gives (rows keep their ``row_index``), or as it is."""
    return dataset if seed is None else dataset.shuffle(seed=seed).flatten_indices()


def eval_splits(config: TrainConfig, tokenizer, needs_offsets: bool, layout: str = "padded") -> dict:
    sets = {}
    if config.eval_split:
        split = prepare_split(config.dataset, config.eval_split, tokenizer, config, needs_offsets, layout=layout)
        sets["eval"] = shuffled(split, config.dataset_shuffle_seed)
    for entry in config.eval_datasets:
        name, source, split = parse_named_set(entry)
        sets[name] = prepare_split(source, split, tokenizer, config, needs_offsets, layout=layout)
    return sets


def batch_layout(config: TrainConfig, model_config) -> str:
    """The collator layout for this run (``--batch_layout``; auto: what the model's attention computes fastest; on
    eager / sdpa ``auto``, shared_prompt or padded per batch: ``batch_layout_options``)."""
    window = getattr(model_config.get_text_config(), "sliding_window", None)
    return layout_for(config.batch_layout, config.attn_implementation, window, config.max_length)


def lean_activations(config: TrainConfig) -> bool:
    """``--lean_activations``, unless Liger's kernels (``--use_liger_kernel``) keep the same little already."""
    return bool(config.lean_activations and not config.use_liger_kernel)


def batch_layout_options(config: TrainConfig, model_config, layout: str) -> dict:
    """The collator's arguments for ``layout`` (``amapo.model.layouts.collator_options``): on eager / sdpa, auto
    and shared_prompt weighed per batch by the memory each costs while training this model."""
    checkpointing = bool(config.gradient_checkpointing)
    attention = config.attn_implementation
    cost = DenseMaskCost.of(
        model_config,
        attention,
        config.load_dtype(),
        training=True,
        checkpointing=checkpointing,
        lean=lean_activations(config),
    )
    return collator_options(layout, attention, cost, announce=config.process_index == 0)


@torch.no_grad()
def precompute_reference_logps(ref_model, dataset, collator, batch_size: int, device):
    """Reference log-probs of every pair, computed once; the reference model can then be freed."""
    enable_response_logps(ref_model)
    ref_model.to(device).eval()
    chosen, rejected = [], []
    for batch in device_batches(dataset, collator, batch_size, device):
        logps, _ = sequence_logps(ref_model, batch)
        n = logps.shape[0] // 2
        chosen.extend(logps[:n].tolist())
        rejected.extend(logps[n:].tolist())
    return dataset.add_column(REFERENCE_COLUMNS[0], chosen).add_column(REFERENCE_COLUMNS[1], rejected)


def whole_weights(model) -> contextlib.AbstractContextManager:
    """The model's whole weights on every process for a while: ZeRO-3 loads each rank a shard (``zero.Init``)."""
    if not any(hasattr(p, "ds_id") for p in model.parameters()):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()))


def resume_checkpoint(config: TrainConfig) -> str | None:
    """The checkpoint to resume from: a path, or ``last``/``true`` for the last completely written one; refused
    if it was written with options that change what is trained (``run_folder.check_resumable``)."""
    value = config.resume_from_checkpoint
    if value in (None, "", "false", "False"):
        return None
    if value in ("true", "True", "last"):
        checkpoint = last_complete_checkpoint(Path(config.output_dir))
        if checkpoint is None:
            raise UserError(
                f"--resume_from_checkpoint {value}: no complete checkpoint-* in {config.output_dir}: check "
                "--output_dir, or start without --resume_from_checkpoint"
            )
    else:
        checkpoint = Path(value)
        if not checkpoint.is_dir():
            raise UserError(
                f"--resume_from_checkpoint: no such checkpoint folder {value}: give a checkpoint-* folder, or last "
                "for the newest complete one in --output_dir"
            )
    check_resumable(checkpoint, config, warn=config.process_index == 0)
    return str(checkpoint)


def whole_run_loss(trainer: PreferenceTrainer, checkpoint: str | None, session_loss: float | None) -> dict:
    """``train_loss`` of the whole run (the Trainer's covers only this session's steps after a resume), and, after
    a resume, the Trainer's own as ``train_loss_since_resume``."""
    loss = trainer.run_loss.mean(trainer.accelerator, trainer.steps_taken())
    if loss is None:
        return {}
    resumed_and_trained = checkpoint is not None and trainer.steps_taken() > 0  # (none: the run was at its end)
    return {"train_loss": loss} | ({"train_loss_since_resume": session_loss} if resumed_and_trained else {})


def planned_steps(config: TrainConfig, pairs: int) -> int:
    """Optimizer steps of a run bounded by epochs, at least (the Trainer's count, without its rounding up)."""
    per_step = config.per_device_train_batch_size * config.data_parallel_size() * config.gradient_accumulation_steps
    return int(pairs * config.num_train_epochs // per_step)


def last_good(output_dir: Path) -> str:
    """Which checkpoint a run stopped early can go on from, in words."""
    last = last_complete_checkpoint(output_dir)
    if last is None:
        return "No checkpoint was saved."
    return f"Last good checkpoint: {last}"


def check_reporting(config: TrainConfig) -> None:
    """Each ``--report_to`` integration is one transformers knows and its package is installed (the Trainer would
    raise a traceback only once the model is loaded)."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [config.report_to] if isinstance(config.report_to, str) else list(config.report_to or [])
    available = get_available_reporting_integrations()
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            known = ", ".join(["none", "all", *INTEGRATION_TO_CALLBACK])
            raise UserError(f"--report_to {name}: not an integration transformers knows; one of {known}")
        if name not in available and name != "flyte":  # (transformers has no availability check for flyte)
            package = {"azure_ml": "azureml-core", "comet_ml": "comet-ml"}.get(name, name)
            raise UserError(
                f"--report_to {name}: its package is not installed: pip install {package}, or leave {name} out of "
                f"--report_to (the run's {METRICS_FILE} has every logged metric either way)"
            )


def check_kernels(config: TrainConfig, model_config) -> None:
    """The attention, the LM-head kernel and Liger's model kernels can run this model on this device (before
    anything loads)."""
    check_attention_installed(config.attn_implementation)
    check_kernel(config.lm_head_kernel, LogitTransform.of(model_config), config.device)
    if config.use_liger_kernel:
        if importlib.util.find_spec("liger_kernel") is None:
            raise UserError("--use_liger_kernel needs liger-kernel: pip install liger-kernel")
        if config.device.type != "cuda":
            raise UserError("--use_liger_kernel: Liger's kernels are Triton kernels and need a CUDA GPU")


def run_training(config: TrainConfig, callbacks: list | None = None) -> TrainResult:
    """Train as ``amapo train`` does; ``callbacks`` (transformers TrainerCallbacks) are added to the Trainer's.

    Everything that can be checked from the options, the model's config and its tokenizer is checked before the
    output folder is touched, so a bad option never removes a previous run (``--overwrite_output_dir``) or
    resumes another's; then the folder is this run's alone while it runs (``RunLock``).
    """
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    check_output_dir(output_dir, config.overwrite_output_dir, config.resume_from_checkpoint)
    checkpoint = resume_checkpoint(config)
    check_reporting(config)
    for option in ("model_name_or_path", "ref_model_name_or_path"):
        check_local_path(option, getattr(config, option))
    check_local_path("dataset", config.dataset, data=True)
    with config.main_process_first(desc="preparing built-in assets"):  # built once, then reused by the others
        model_path = resolve_source(config.model_name_or_path)
    named = f"--model_name_or_path {config.model_name_or_path}"
    model_config = load_model_config(model_path, trust_remote_code=config.trust_remote_code, named=named)
    check_weight_dtype(config, model_config)  # before tokenizing or loading anything large
    check_positions(config.max_length, model_config, config.model_name_or_path)
    check_kernels(config, model_config)
    sequence_parallel.check_model(config.sequence_parallel_size, model_config, config.attn_implementation)
    tokenizer = load_tokenizer(
        model_path, trust_remote_code=config.trust_remote_code, chat_template=config.chat_template
    )
    if config.chat_rendering == "handbook" and not tokenizer.chat_template:
        raise UserError(
            f"--chat_rendering handbook renders with a chat template, and the tokenizer of {config.model_name_or_path} "
            "has none: pass --chat_template (Jinja text or a .jinja file) or use --chat_rendering amapo"
        )
    with RunLock(output_dir, held=config.process_index == 0):
        if config.overwrite_output_dir:
            with config.main_process_first(local=False, desc="removing the previous run"):  # the others wait
                if config.process_index == 0:
                    remove_previous_run(output_dir)
        return train_in_folder(config, output_dir, checkpoint, model_path, model_config, tokenizer, callbacks)


def train_in_folder(
    config: TrainConfig,
    output_dir: Path,
    checkpoint: str | None,
    model_path: str,
    model_config,
    tokenizer,
    callbacks: list | None = None,
) -> TrainResult:
    """The run itself, in the output folder ``run_training`` holds and has cleared or checked for a resume."""
    sp_size = config.sequence_parallel_size
    gather, step_statistics = margin_statistics(*config.margin_pool(), every=sp_size)
    loss_fn = config.build_loss(gather=gather)  # built once, with the pairs its statistics pool over
    layout = batch_layout(config, model_config)
    layout = sequence_parallel.layout(sp_size, config.batch_layout, layout, config.attn_implementation)
    logger.info("batch layout: %s", layout)
    layout_options = batch_layout_options(config, model_config, layout)  # the reference pass shares its choices
    needs_offsets = loss_fn.needs_offsets
    train_split = prepare_split(config.dataset, config.train_split, tokenizer, config, needs_offsets, layout=layout)
    trained_on = data_record(train_split, config.dataset, config.train_split)
    if checkpoint is not None:  # the same rows as the checkpoint's, before the model loads
        check_resumed_data(Path(checkpoint), trained_on, warn=config.process_index == 0)
    train_dataset = shuffled(train_split, config.dataset_shuffle_seed)
    del train_split  # (an in-memory split is not kept beside its shuffled copy while training)
    eval_datasets = eval_splits(config, tokenizer, loss_fn.needs_offsets, layout)

    if config.device.type == "cpu":  # before the model's tensors: glibc's heap would keep a step's freed ones
        return_freed_tensors_to_the_system()
    model = load_model(model_path, **config.model_options())
    if config.disable_dropout:
        disable_dropout(model)
    if lean_activations(config):
        patched = apply_lean_activations(model)
        logger.info("lean activations: %s", ", ".join(f"{n} x{k}" for n, k in patched.items()) or "no module known")
    if config.use_peft:
        model = apply_lora(model, config)
    check_trained_weights(model, config)
    sizes = SaveSizes.of(model, config.optim, config.save_only_model)
    total = config.max_steps if config.max_steps > 0 else planned_steps(config, len(train_dataset))
    check_free_space(output_dir, sizes, checkpoints=saves_a_checkpoint(config, total, resumed=checkpoint))

    extra_columns = ["offset"] if loss_fn.needs_offsets else []
    has_ref_columns = all(c in train_dataset.column_names for c in REFERENCE_COLUMNS)
    ref_model = None
    if loss_fn.needs_reference and not has_ref_columns and not config.use_peft:
        ref_model = load_model(resolve_source(config.ref_model_name_or_path or model_path), **config.model_options())
        ref_model.requires_grad_(False).eval()
    if ref_model is not None and config.precompute_ref_logps:
        collator = PreferenceCollator(tokenizer.pad_token_id, **layout_options)
        compute = lambda ds: precompute_reference_logps(  # noqa: E731
            ref_model, ds, collator, config.per_device_eval_batch_size, config.device
        )
        with whole_weights(ref_model):  # (no engine runs it: ZeRO-3's zero.Init left each rank a shard)
            train_dataset = compute(train_dataset)
            eval_datasets = {name: compute(ds) for name, ds in eval_datasets.items()}
        ref_model, has_ref_columns = None, True
    if loss_fn.needs_reference and has_ref_columns:
        extra_columns += list(REFERENCE_COLUMNS)
    collator = RowIndexCollator(
        PreferenceCollator(tokenizer.pad_token_id, extra_columns=extra_columns, **layout_options)
    )
    sp = None
    if sp_size > 1:  # each batch sliced over the group, attention through DeepSpeed's Ulysses
        sp = sequence_parallel.SequenceParallel(sp_size, tokenizer.pad_token_id).setup(model)
        collator = sequence_parallel.ShardableBatches(collator, sp_size, tokenizer.pad_token_id)

    trainer = PreferenceTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets or None,
        data_collator=collator,
        processing_class=tokenizer,
        loss_fn=loss_fn,
        step_statistics=step_statistics,
        lm_head_chunk_size=config.lm_head_chunk_size,
        lm_head_kernel=config.lm_head_kernel,
        ref_model=ref_model,
        data_record=trained_on,
        sequence_parallel=sp,
        nonfinite_guard=(guard := NonFiniteGuard(config.max_nonfinite_steps, output_dir / NONFINITE_FILE)),
    )
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LiveProgressCallback())
    trainer.add_callback(JsonlMetricsCallback(output_dir / METRICS_FILE))
    trainer.add_callback(SavedFileModesCallback())
    checkpoint_state = CheckpointStateCallback(trainer.loss_fn)
    trainer.add_callback(checkpoint_state)
    checkpoint_state.restore(checkpoint)
    trainer.add_callback(ResumeNote(checkpoint))
    trainer.run_loss.load(checkpoint)
    if trainer.is_deepspeed_enabled:  # DeepSpeed skips non-finite steps itself, before the guard's wrap
        trainer.add_callback(EngineSkipCallback(guard, engine=lambda: trainer.model_wrapped))
    trainer.add_callback(NonFiniteStopCallback(guard))
    interrupt = InterruptCallback()
    trainer.add_callback(interrupt)
    for callback in callbacks or ():
        trainer.add_callback(callback)

    eval_before = trainer.evaluate() if eval_datasets else {}
    interrupt.install()
    try:
        with tied_weights_not_reported_missing(model):
            train_output = trainer.train(resume_from_checkpoint=checkpoint)
    except Exception as err:  # a full disk: one line, the incomplete checkpoint removed
        stop_if_out_of_space(err, output_dir, trainer.state.global_step, sizes, main=trainer.args.should_save)
        raise
    finally:
        interrupt.restore()
    if interrupt.signal_received is not None:
        raise TrainingInterrupted(interrupt.signal_received, last_complete_checkpoint(output_dir))
    if guard.tripped:
        raise NonFiniteStepError(
            f"{guard.consecutive} optimizer steps in a row had a non-finite loss or gradient (rows in "
            f"{output_dir / NONFINITE_FILE}); stopped without saving a final model. {last_good(output_dir)}"
        )
    guard.check_some_step_taken()
    eval_after = trainer.evaluate() if eval_datasets else {}
    metrics = {**train_output.metrics, "global_step": train_output.global_step}
    metrics |= whole_run_loss(trainer, checkpoint, train_output.metrics.get("train_loss"))
    sizes_of_sets = {name: len(dataset) for name, dataset in eval_datasets.items()}
    health = check_health(eval_before, eval_after, sizes_of_sets, trainer.state.log_history)
    result = TrainResult(output_dir, metrics, eval_before, eval_after, health)
    with FinalSave(output_dir, sizes, main=trainer.is_world_process_zero()):
        trainer.save_model(str(output_dir))
        if trainer.is_world_process_zero():
            fix_saved_file_modes(output_dir)  # safetensors writes weights 0600 through a temp file
            write_resolved_config(config, output_dir)
            summary = {"train": result.train_metrics, "eval_before": eval_before, "eval_after": eval_after,
                       "health": health.as_dict()}  # fmt: skip
            (output_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
            write_model_card(config, result, output_dir)
    if trainer.is_world_process_zero():
        print_summary(config, result)
    return result
