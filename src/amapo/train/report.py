"""What a run leaves for people: the resolved config, a model card, and a summary table in the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from rich.console import Console
from rich.table import Table

from amapo.losses import loss_spec

if TYPE_CHECKING:
    from amapo.train.config import TrainConfig
    from amapo.train.run import TrainResult

CONFIG_FILE = "amapo_config.yaml"
ACCURACY = "rewards/accuracies"


def write_resolved_config(config: TrainConfig, output_dir: Path) -> None:
    """Every option as the run used it, loss defaults filled in, loadable again with ``--config``."""
    values = config.to_dict()
    values.update({k: v for k, v in config.resolved_loss_options().items()})
    for key in ("_n_gpu", "local_rank"):
        values.pop(key, None)
    (output_dir / CONFIG_FILE).write_text(yaml.safe_dump(values, sort_keys=True))


def accuracy_rows(result: TrainResult) -> list[tuple[str, float | None, float | None]]:
    """(eval set, ranking accuracy before training, after) for every eval set of the run."""
    rows = []
    for key, after in sorted(result.eval_after.items()):
        if key.endswith("_" + ACCURACY):
            name = key.removeprefix("eval_").removesuffix("_" + ACCURACY)
            rows.append((name, result.eval_before.get(key), after))
    return rows


def write_model_card(config: TrainConfig, result: TrainResult, output_dir: Path) -> None:
    spec = loss_spec(config.method)
    options = ", ".join(f"{k}={v}" for k, v in sorted(config.resolved_loss_options().items()))
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
        f"- Learning rate {config.learning_rate}, {config.lr_scheduler_type} schedule, warm-up {config.warmup_ratio}, "
        f"{config.num_train_epochs} epoch(s), {config.per_device_train_batch_size} pairs per device x "
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
    lines += [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{output_dir}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{output_dir}")',
        "```",
        "",
        f"Full configuration: `{CONFIG_FILE}`; metrics of every logged step: `metrics.jsonl`.",
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
    for key in ("train_loss", "train_runtime", "train_samples_per_second"):
        if key in result.train_metrics:
            table.add_row(key, f"{result.train_metrics[key]:.4g}")
    table.add_row("output", str(result.output_dir))
    console.print(table)
    rows = accuracy_rows(result)
    if rows:
        acc = Table(title="Held-out ranking accuracy (chosen scored above rejected)")
        for column in ("eval set", "base model", "trained", "change"):
            acc.add_column(column, justify="left" if column == "eval set" else "right")
        for name, before, after in rows:
            change = "-" if before is None else f"{after - before:+.3f}"
            acc.add_row(name, _fmt(before), _fmt(after), change)
        console.print(acc)
