"""Every transformers internal that amapo relies on, in one module, with the range of versions it is tested on.

transformers' documented API does not cover everything a preference trainer needs. What amapo touches beyond it:

* ``Trainer`` methods that amapo overrides or calls but transformers does not document for subclassing
  (``TRAINER_HOOKS``): the ``PreferenceTrainer`` checks them when it is defined (``check_trainer_hooks``), so a
  transformers release that renames one or changes its parameters stops with a message naming the version and the
  tested range, instead of training with the override silently never called.
* ``Trainer.loss_is_scaled_for_ga`` and ``Trainer.model_accepts_loss_kwargs``: attributes amapo sets (the loss is
  already a per-pair mean; the model takes no loss keywords), read by ``Trainer.training_step``.
* ``config._attn_implementation``: the attention a loaded model runs (``attention_implementation``).
* ``ProgressCallback.training_bar``: the tqdm bar the live progress callback writes its postfix to (``progress_bar``).
* the source file of ``TrainingArguments``, read with ``ast`` for its option names (``training_argument_names``):
  importing it takes seconds, and a misspelt option should be an error within one.
* ``Trainer.create_optimizer``: overridden with its arguments passed through (its parameters changed in 5.x).
* ``TrainingArguments``' ``activation_checkpointing`` (the recipes' name; 5.23 renamed ``gradient_checkpointing``)
  and ``train_sampling_strategy`` (5.0 had only ``group_by_length``): why the oldest tested release is 5.23.
* ``transformers.trainer_utils.PREFIX_CHECKPOINT_DIR``, copied as ``CHECKPOINT_PREFIX`` for the same reason.
* ``transformers.integrations.integration_utils``' ``INTEGRATION_TO_CALLBACK`` and
  ``get_available_reporting_integrations``: the ``--report_to`` names and which are installed, checked before the
  model loads (``amapo.train.run.check_reporting``).
* ``transformers.trainer.skip_first_batches``: the name the Trainer skips a resumed epoch's batches with (5.23:
  in ``_inner_training_loop``; 5.24+: in ``get_resumed_dataloader``); sequence parallelism wraps it for DeepSpeed's
  data-loader adapter (``amapo.train.sequence_parallel.skip_resumed_batches_of_adapters``).
* the attention names of ``ALL_ATTENTION_FUNCTIONS``, copied as ``amapo.attention_names.ATTENTION_IMPLEMENTATIONS``
  so that ``--attn_implementation`` is checked without importing transformers.
* ``AttentionInterface.register("sdpa", ...)``: amapo wraps transformers' sdpa attention function once
  (``amapo.model.sequence_rows``), relying on a model's forward keywords reaching the attention function of every
  layer and on a 4D attention mask being passed on as given.
* the patched forward (``amapo.model.logps``) uses ``model.base_model(...).last_hidden_state``,
  ``get_output_embeddings()`` and ``config.get_text_config()``; it checks its own numbers on the first batch.

CI runs the whole suite on the oldest and the newest version of ``TESTED_TRANSFORMERS`` (``.ci/run``).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

# The oldest and the newest release the suite runs on in CI: pyproject allows exactly this range, so the README's
# install resolves the newest and CI's first suite runs it; .ci/run then runs the suite again on the oldest.
TESTED_TRANSFORMERS = ("5.23.0", "5.25.0")
CHECKPOINT_PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR
TRAINER_HOOKS = {  # method -> its parameters after self, as amapo calls or overrides it
    "_save_checkpoint": ("model", "trial"),
    "_prepare_inputs": ("inputs",),
    "get_batch_samples": ("epoch_iterator", "num_batches", "device"),
    "compute_loss": ("model", "inputs", "return_outputs", "num_items_in_batch"),
    "compute_loss_context_manager": (),
    "prediction_step": ("model", "inputs", "prediction_loss_only", "ignore_keys"),
    "evaluation_loop": ("dataloader", "description", "prediction_loss_only", "ignore_keys", "metric_key_prefix"),
    "log": ("logs", "start_time"),
    "get_train_dataloader": (),  # sequence parallelism deals each batch over the SP group
    "get_total_train_batch_size": ("args",),  # ... and counts data-parallel ranks only
}


def outside_tested_range(installed: str) -> bool:
    """Whether a transformers version (major.minor) is outside ``TESTED_TRANSFORMERS``."""

    def minor(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".")[:2] if p.isdigit())

    return not minor(TESTED_TRANSFORMERS[0]) <= minor(installed) <= minor(TESTED_TRANSFORMERS[-1])


def check_trainer_hooks(trainer_class) -> None:
    """Every method in ``TRAINER_HOOKS`` exists on ``trainer_class`` with the parameters amapo relies on."""
    import transformers

    for name, expected in TRAINER_HOOKS.items():
        method = getattr(trainer_class, name, None)
        found = None if method is None else tuple(inspect.signature(method).parameters)[1:]
        if found != expected:
            now = "missing" if found is None else "(" + ", ".join(found) + ")"
            raise RuntimeError(
                f"transformers {transformers.__version__}: Trainer.{name} is {now}, amapo overrides or calls it as "
                f"({', '.join(expected)}); amapo is tested with transformers {' to '.join(TESTED_TRANSFORMERS)}"
            )


def attention_implementation(config) -> str | None:
    """The attention kernel a loaded model runs (eager, sdpa, flash_attention_2, ...)."""
    return getattr(config, "_attn_implementation", None)


def progress_bar(callback):
    """The tqdm bar of a ``ProgressCallback`` while it trains (None before and after)."""
    return getattr(callback, "training_bar", None)


def training_argument_names() -> set[str] | None:
    """The option names of transformers' ``TrainingArguments``, read from its source without importing it (the
    import takes seconds); None if the source cannot be read that way (then pass 2 finds unknown options)."""
    try:
        spec = importlib.util.find_spec("transformers")
        source = Path(spec.origin).with_name("training_args.py").read_text()
        tree = ast.parse(source)
    except (AttributeError, OSError, SyntaxError, TypeError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments":
            return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)
                    and isinstance(item.target, ast.Name)}  # fmt: skip
    return None
