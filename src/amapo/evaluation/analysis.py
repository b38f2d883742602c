"""``amapo analyze``: where each method's gradient goes on a model's pairs (the paper's Sec. 3 analysis).

Log-probs are computed once; every method then weighs the same pairs, so the figure and the table compare
methods at the same scores, not methods after different training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from amapo.builtin import resolve_source
from amapo.data import load_preference_dataset, tokenize_dataset
from amapo.evaluation.plots import plot_accuracy_curves, plot_gradient_weights
from amapo.evaluation.run import load_for_scoring, loss_for_model, parse_named_set, print_metric_table, trained_config
from amapo.evaluation.scoring import compute_pair_logps, score_with_loss

DEFAULT_METHODS = ["dpo", "simpo", "amapo", "amapo-released"]


@dataclass
class AnalyzeConfig:
    model_name_or_path: str = field(metadata={"help": "A checkpoint or `amapo train` output folder."})
    dataset: str = field(metadata={"help": "Pairs to analyze: 'SOURCE', 'SOURCE@SPLIT' or 'NAME=SOURCE@SPLIT'."})
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS), metadata={"help": "Methods to compare."})
    ref_model_name_or_path: str | None = field(default=None, metadata={"help": "Reference (default: initial policy)."})
    batch_size: int = field(default=32, metadata={"help": "Pairs per batch (AMaPO's statistics batch)."})
    max_length: int | None = field(default=None, metadata={"help": "Default: the training run's, else 1024."})
    max_prompt_length: int | None = field(default=None, metadata={"help": "Default: the training run's, else 512."})
    output_dir: str | None = field(default=None, metadata={"help": "Default: MODEL/analysis."})


def accuracy_curves_from_metrics(metrics_file: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(steps, accuracy) per eval set from a run's metrics.jsonl (its evaluations during training)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    if not metrics_file.exists():
        return {}
    for line in metrics_file.read_text().splitlines():
        log = json.loads(line)
        for key, value in log.items():
            if key.startswith("eval_") and key.endswith("_rewards/accuracies"):
                name = key.removeprefix("eval_").removesuffix("_rewards/accuracies")
                curves.setdefault(name, []).append((log["step"], value))
    return {k: (np.array([s for s, _ in v]), np.array([a for _, a in v])) for k, v in curves.items()}


def run_analysis(config: AnalyzeConfig, console: Console | None = None) -> dict[str, dict[str, float]]:
    console = console or Console()
    trained = trained_config(config.model_name_or_path)
    losses = {m: loss_for_model(m, trained) for m in config.methods}  # unknown names fail before any loading
    model_path = resolve_source(config.model_name_or_path)
    needs_reference = any(loss.needs_reference for loss in losses.values())
    tokenizer, model, ref_model = load_for_scoring(model_path, trained, needs_reference, config.ref_model_name_or_path)

    entry = config.dataset if "=" in config.dataset else f"pairs={config.dataset}"
    _, source, split = parse_named_set(entry)
    pairs = load_preference_dataset(resolve_source(source), split=split)
    tokenized = tokenize_dataset(
        pairs,
        tokenizer,
        max_length=config.max_length or trained.get("max_length", 1024),
        max_prompt_length=config.max_prompt_length or trained.get("max_prompt_length", 512),
        truncation_mode=trained.get("truncation_mode", "keep_end"),
        rendering=trained.get("chat_rendering", "amapo"),
    )
    logps = compute_pair_logps(
        model, tokenized, pad_token_id=tokenizer.pad_token_id, batch_size=config.batch_size, ref_model=ref_model
    )
    output_dir = Path(config.output_dir or Path(model_path) / "analysis")
    results, points = {}, {}
    for method, loss_fn in losses.items():
        scores = score_with_loss(logps, loss_fn, config.batch_size)
        results[method] = {"accuracy": scores.accuracy(), **scores.gradient_indicators()}
        points[method] = (scores.scores, scores.grad_weights)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "analysis.json").write_text(json.dumps({"dataset": entry, "methods": results}, indent=2))
    plot_gradient_weights(points, output_dir / "gradient_weights.png")
    curves = accuracy_curves_from_metrics(Path(model_path) / "metrics.jsonl")
    if curves:
        shaded = {k: (s, a, np.zeros_like(a)) for k, (s, a) in curves.items()}
        plot_accuracy_curves(shaded, output_dir / "accuracy_over_steps.png", "ranking accuracy during training")
    print_analysis(results, console)
    return results


def print_analysis(results: dict[str, dict[str, float]], console: Console) -> None:
    columns = ["accuracy", "grad_weight/correct", "grad_weight/incorrect", "gradient/overfitting",
               "gradient/underfitting"]  # fmt: skip
    print_metric_table("Gradient dynamics (lower overfitting / underfitting is better)", "method", results, columns,
                       console)  # fmt: skip
