"""``amapo analyze``: where each method's gradient goes on a model's pairs (the paper's Sec. 3 analysis).

Log-probs are computed once; every method then weighs the same pairs, so the figure and the table compare
methods at the same scores, not methods after different training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console

from amapo.builtin import resolve_source
from amapo.errors import UserError
from amapo.evaluation.options import AnalyzeConfig
from amapo.evaluation.plots import plot_accuracy_curves, plot_gradient_weights
from amapo.evaluation.run import (
    check_model_positions,
    check_model_weights,
    load_models,
    loss_for_model,
    output_folder,
    print_metric_table,
    reference_source,
    say,
    trained_config,
)
from amapo.evaluation.scoring import compute_pair_logps, score_with_loss
from amapo.evaluation.sets import (
    EvalSet,
    column_mapping,
    load_set,
    parse_named_set,
    run_role_mapping,
    token_limits,
)
from amapo.model.loading import load_tokenizer
from amapo.option_checks import check_data_path, check_model_path
from amapo.output_folder import check_no_previous_results, check_writable_folder, remove_previous_results
from amapo.run_files import accuracy_by_set

RESULT_FILES = ("analysis.json", "gradient_weights.png", "accuracy_over_steps.png")  # what run_analysis writes


def accuracy_curves_from_metrics(metrics_file: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(steps, accuracy) per eval set from a run's metrics.jsonl (its evaluations during training)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    if not metrics_file.exists():
        return {}
    for line in metrics_file.read_text().splitlines():
        log = json.loads(line)
        for name, value in accuracy_by_set(log).items():
            curves.setdefault(name, []).append((log["step"], value))
    return {k: (np.array([s for s, _ in v]), np.array([a for _, a in v])) for k, v in curves.items()}


def run_analysis(config: AnalyzeConfig, console: Console | None = None) -> dict[str, dict[str, float]]:
    """Gradient indicators of every method on the same log-probs. As ``amapo eval``: options, paths, methods, the
    output folder (writable, and without earlier results unless ``overwrite_output_dir``), the models' weights and
    the set (loaded and tokenized) are checked before the model loads; the output folder is made at the end."""
    console = console or Console()
    check_model_path("model_name_or_path", config.model_name_or_path)
    check_model_path("ref_model_name_or_path", config.ref_model_name_or_path)
    trained = trained_config(config.model_name_or_path)
    pairs_set = EvalSet(*parse_named_set(config.named_dataset), origin="--dataset")
    check_data_path(pairs_set.label, pairs_set.source)
    losses = {m: loss_for_model(m, trained, option="methods") for m in config.methods}
    referenced = [m for m, loss in losses.items() if loss.needs_reference]
    ref_source = None
    if referenced:
        ref_source = reference_source(trained, config.ref_model_name_or_path, f"--methods {', '.join(referenced)}")
    mapping, note = column_mapping(config.column_mapping, trained)
    if note:
        say(console, f"amapo analyze: using {note}")
    limits = token_limits(trained, max_length=config.max_length, max_prompt_length=config.max_prompt_length)
    model_path = resolve_source(config.model_name_or_path)
    output_dir = output_folder(config.output_dir, config.model_name_or_path, model_path, "analysis")
    check_writable_folder(output_dir, "--output_dir")
    if not config.overwrite_output_dir:
        check_no_previous_results(output_dir, RESULT_FILES, "analyze")
    check_model_positions(model_path, limits["max_length"])
    check_model_weights(config.model_name_or_path, ref_source)
    tokenizer = load_tokenizer(model_path)
    loaded = load_set(pairs_set, tokenizer, limits, mapping, note, run_role_mapping(trained))
    if loaded.pairs is None:  # the gradient of a pair loss needs pairs
        raise UserError(
            f"{pairs_set.label}: a {loaded.format} set holds several responses per prompt, not preference pairs; "
            "`amapo analyze` weighs pairs: score it with `amapo eval --datasets NAME=SOURCE`"
        )
    tokenized = loaded.tokenized

    model, ref_model = load_models(model_path, ref_source)
    logps = compute_pair_logps(
        model, tokenized, pad_token_id=tokenizer.pad_token_id, batch_size=config.batch_size, ref_model=ref_model
    )
    results, points = {}, {}
    for method, loss_fn in losses.items():
        scores = score_with_loss(logps, loss_fn, config.batch_size)
        results[method] = {"accuracy": scores.accuracy(), **scores.gradient_indicators()}
        points[method] = (scores.scores, scores.grad_weights)
    output_dir.mkdir(parents=True, exist_ok=True)
    if config.overwrite_output_dir:  # the earlier results go only now that this run's are ready
        remove_previous_results(output_dir, RESULT_FILES)
    dataset = f"{pairs_set.name}={pairs_set.source}@{pairs_set.split}"
    (output_dir / "analysis.json").write_text(json.dumps({"dataset": dataset, "methods": results}, indent=2))
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
