"""What a run leaves for people: the resolved config, a model card, weights others can read, and a summary table
in the terminal (whole, also when piped), with one warning line on stderr if the run degraded its model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from rich.console import Console
from rich.table import Table

from amapo.console import print_table
from amapo.losses import loss_spec
from amapo.run_files import CONFIG_FILE, METRICS_FILE, accuracy_by_set

if TYPE_CHECKING:
    from amapo.train.config import TrainConfig
    from amapo.train.results import TrainResult


def resolved_config(config: TrainConfig) -> dict:
    """Every option as the run uses it, loss defaults filled in, as ``CONFIG_FILE`` records it (through YAML, so
    it compares equal to a saved copy)."""
    values = config.to_dict()
    values.update({k: v for k, v in config.resolved_loss_options().items()})
    for key in ("_n_gpu", "local_rank"):
        values.pop(key, None)
    return yaml.safe_load(yaml.safe_dump(values))


def write_resolved_config(config: TrainConfig, output_dir: Path) -> None:
    """Every option as the run used it, loadable again with ``--config`` (in the run folder and each checkpoint)."""
    (output_dir / CONFIG_FILE).write_text(yaml.safe_dump(resolved_config(config), sort_keys=True))


def accuracy_rows(result: TrainResult) -> list[tuple[str, float | None, float | None]]:
    """(eval set, ranking accuracy before training, after) for every eval set of the run."""
    before = accuracy_by_set(result.eval_before)
    return [(name, before.get(name), after) for name, after in sorted(accuracy_by_set(result.eval_after).items())]


def steps_trained(result: TrainResult) -> int | None:
    """Optimizer steps the run took: ``global_step`` in its train metrics, else the step of the trainer's final
    training log (the one with ``train_runtime``) in ``metrics.jsonl``; None if neither says."""
    if "global_step" in result.train_metrics:
        return int(result.train_metrics["global_step"])
    metrics_file = Path(result.output_dir) / METRICS_FILE
    if not metrics_file.exists():
        return None
    steps = [log["step"] for log in map(json.loads, metrics_file.read_text().splitlines()) if "train_runtime" in log]
    return int(steps[-1]) if steps else None


def training_extent(config: TrainConfig, result: TrainResult) -> str:
    """What was trained, from what the trainer measured (a run stopped by max_steps covers part of an epoch), and
    what bounded it."""
    steps, epochs = steps_trained(result), result.train_metrics.get("epoch")
    bound = f"max_steps {config.max_steps}" if config.max_steps > 0 else f"num_train_epochs {config.num_train_epochs}"
    done = []
    if steps is not None:
        done.append(f"{steps} optimizer step{'s' * (steps != 1)}")
    if epochs is not None:
        done.append(f"{epochs:.3g} epoch{'s' * (epochs != 1)} of the training pairs")
    return f"{', '.join(done)} ({bound})" if done else f"planned: {bound}"


def write_model_card(config: TrainConfig, result: TrainResult, output_dir: Path) -> None:
    spec = loss_spec(config.method)
    options = ", ".join(f"{k}={v}" for k, v in sorted(config.resolved_loss_options().items()))
    schedule = getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type)  # a SchedulerType enum
    lines = [
        "---",
        "library_name: transformers",
        "tags: [amapo, preference-optimization, " + config.method + "]",
        "---",
        "",
        f"# {output_dir.name}",
        "",
        f"Trained with amapo from `{config.model_name_or_path}` on `{config.dataset}` (split `{config.train_split}`).",
        "",
        f"- Method: `{config.method}`: {spec.summary}",
        f"- Loss options: {options}",
        f"- Trained: {training_extent(config, result)}",
        f"- Learning rate {config.learning_rate}, {schedule} schedule, "
        f"warm-up {config.warmup_ratio}, {config.per_device_train_batch_size} pairs per device x "
        f"{config.gradient_accumulation_steps} accumulation step(s), seed {config.seed}",
        f"- Max length {config.max_length}, max prompt length {config.max_prompt_length} ({config.truncation_mode})",
        "",
    ]
    rows = accuracy_rows(result)
    if rows:
        lines += [
            "## Ranking accuracy (implicit reward of the method)",
            "",
            "| eval set | before | after |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {_fmt(before)} | {_fmt(after)} |" for name, before, after in rows]
        lines.append("")
    if result.health is not None and result.health.degraded:
        lines += ["## Warning: training degraded this model", "", *[f"- {r}" for r in result.health.reasons], ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{output_dir}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{output_dir}")',
        "```",
        "",
        f"Full configuration: `{CONFIG_FILE}`; metrics of every logged step: `{METRICS_FILE}`.",
        "",
    ]
    (output_dir / "README.md").write_text("\n".join(lines))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_summary(config: TrainConfig, result: TrainResult, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"amapo train: {config.method} on {config.dataset}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    resumed = "train_loss_since_resume" in result.train_metrics
    labels = {"train_loss": "train_loss (whole run)" if resumed else "train_loss",
              "train_runtime": "train_runtime (this session)" if resumed else "train_runtime"}  # fmt: skip
    for key in ("train_loss", "train_loss_since_resume", "train_runtime", "train_samples_per_second"):
        if key in result.train_metrics:
            table.add_row(labels.get(key, key), f"{result.train_metrics[key]:.4g}")
    table.add_row("output", str(result.output_dir))
    print_table(table, console)
    rows = accuracy_rows(result)
    if rows:
        acc = Table(title="Held-out ranking accuracy (chosen scored above rejected)")
        for column in ("eval set", "base model", "trained", "change"):
            acc.add_column(column, justify="left" if column == "eval set" else "right")
        for name, before, after in rows:
            change = "-" if before is None else f"{after - before:+.3f}"
            acc.add_row(name, _fmt(before), _fmt(after), change)
        print_table(acc, console)
    if result.health is not None and result.health.degraded:  # last, so it is the line the run ends with
        print(f"amapo: {result.health.warning(config.learning_rate)}", file=sys.stderr, flush=True)


def current_umask() -> int:
    """The process umask: from /proc where there is one (reading it with ``os.umask`` sets it for a moment, for
    every thread of the process), else set and set straight back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def fix_saved_file_modes(folder: Path) -> list[Path]:
    """Give the ``*.safetensors`` weights in ``folder`` the mode any other saved file gets (0o666 less the umask).

    safetensors >= 0.8 writes a weights file to a temporary file and renames it into place, and a temporary file is
    created 0o600 (safetensors/safetensors#782, since #764): ``model.safetensors`` came out readable by its owner
    only while ``config.json`` beside it was 0o644, so another user (a serving account, a container) could read
    the folder's config but not its weights. Returns the files whose mode changed. No-op where modes are not POSIX.
    """
    if os.name != "posix":
        return []
    mode = 0o666 & ~current_umask()
    changed = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
            changed.append(path)
    return changed
