"""``amapo eval``: ranking accuracy (and, optionally, generations) of a model on named preference sets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer

from amapo.builtin import is_builtin, resolve_source
from amapo.builtin.task import true_reward
from amapo.data import load_preference_dataset, tokenize_dataset
from amapo.data.tokenization import check_rendering
from amapo.evaluation.generation import generate_responses, write_alpacaeval
from amapo.evaluation.plots import plot_margin_histograms
from amapo.evaluation.scoring import PairScores, compute_pair_logps, score_with_loss
from amapo.losses import PreferenceLoss, build_loss, loss_spec
from amapo.train.report import CONFIG_FILE

RESULTS_FILE = "eval_results.json"


@dataclass
class EvalConfig:
    model_name_or_path: str = field(metadata={"help": "Model to evaluate: an `amapo train` output folder or Hub id."})
    datasets: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Eval sets, each 'NAME=SOURCE' or 'NAME=SOURCE@SPLIT' (SOURCE: file, folder, Hub, builtin:)."
        },
    )
    method: str | None = field(
        default=None,
        metadata={"help": "Whose implicit reward to rank by (default: the method the model was trained with)."},
    )
    beta: float | None = field(default=None, metadata={"help": "Override the method's beta."})
    ref_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Reference model for reference-based methods (default: the initial policy)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Pairs per batch (also AMaPO's statistics batch)."})
    max_length: int | None = field(default=None, metadata={"help": "Default: the training run's, else 1024."})
    max_prompt_length: int | None = field(default=None, metadata={"help": "Default: the training run's, else 512."})
    truncation_mode: str | None = field(default=None, metadata={"help": "Default: the training run's, else keep_end."})
    chat_rendering: str | None = field(
        default=None, metadata={"help": "amapo or handbook (as in training). Default: the training run's, else amapo."}
    )
    column_mapping: str | None = field(default=None, metadata={"help": "JSON column mapping, as for training."})
    generate: bool = field(default=False, metadata={"help": "Also sample answers to each set's prompts."})
    max_generations: int = field(default=256, metadata={"help": "Prompts to answer per set."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens per generated answer."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy."})
    output_dir: str | None = field(default=None, metadata={"help": "Where results go (default: MODEL/eval)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})

    def __post_init__(self) -> None:
        if self.chat_rendering is not None:
            check_rendering(self.chat_rendering)
        for entry in self.datasets:
            if "=" not in entry:
                raise ValueError(f"datasets entries must be NAME=SOURCE[@SPLIT], got {entry!r}")


def parse_named_set(entry: str) -> tuple[str, str, str]:
    name, _, source = entry.partition("=")
    source, _, split = source.partition("@")
    return name, source, split or "train"


def trained_config(model_dir: str) -> dict[str, Any]:
    """The resolved config an ``amapo train`` run saved beside its model, or {} for other models."""
    path = Path(model_dir) / CONFIG_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def loss_for_model(method: str | None, trained: dict[str, Any], beta: float | None = None) -> PreferenceLoss:
    """The method's loss with the options the model was trained with (so its reward definition)."""
    name = method or trained.get("method")
    if name is None:
        raise ValueError("the model has no amapo_config.yaml: pass --method to choose the reward definition")
    accepted = loss_spec(name).defaults()
    options = {
        k: trained[k] for k in accepted if k in trained and trained[k] is not None and name == trained.get("method")
    }
    if beta is not None:
        options["beta"] = beta
    return build_loss(name, **options)


def load_for_scoring(model_path: str, trained: dict[str, Any], needs_reference: bool, ref_override: str | None):
    """(tokenizer, model, reference or None) on the best device; the reference defaults to the initial policy."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_path, use_safetensors=True).to(device)
    if not needs_reference:
        return tokenizer, model, None
    ref_source = ref_override or trained.get("ref_model_name_or_path") or trained.get("model_name_or_path")
    if ref_source is None:
        raise ValueError("a reference-based method needs a reference model: pass --ref_model_name_or_path")
    ref_model = AutoModelForCausalLM.from_pretrained(resolve_source(ref_source), use_safetensors=True).to(device)
    return tokenizer, model, ref_model


def print_metric_table(title: str, key_name: str, results: dict[str, dict[str, float]], columns, console) -> None:
    """One row per key of ``results``, one column per metric that any row has."""
    shown = [c for c in columns if any(c in r for r in results.values())]
    table = Table(title=title)
    table.add_column(key_name)
    for column in shown:
        table.add_column(column, justify="right")
    for name, metrics in results.items():
        table.add_row(name, *(f"{metrics[c]:.3f}" if c in metrics else "-" for c in shown))
    console.print(table)


def run_eval(config: EvalConfig, console: Console | None = None) -> dict[str, dict[str, float]]:
    """Per eval set: ranking accuracy, reward-margin distribution, gradient indicators (and generations).

    Writes ``eval_results.json``, ``reward_margins.png`` and, with ``generate``, ``alpacaeval_<set>.json``.
    """
    if not config.datasets:
        raise ValueError("amapo eval needs at least one --datasets NAME=SOURCE[@SPLIT]")
    console = console or Console()
    trained = trained_config(config.model_name_or_path)
    loss_fn = loss_for_model(config.method, trained, config.beta)
    model_path = resolve_source(config.model_name_or_path)
    tokenizer, model, ref_model = load_for_scoring(
        model_path, trained, loss_fn.needs_reference, config.ref_model_name_or_path
    )

    output_dir = Path(config.output_dir or Path(model_path) / "eval")
    output_dir.mkdir(parents=True, exist_ok=True)
    limits = {
        "max_length": config.max_length or trained.get("max_length", 1024),
        "max_prompt_length": config.max_prompt_length or trained.get("max_prompt_length", 512),
        "truncation_mode": config.truncation_mode or trained.get("truncation_mode", "keep_end"),
        "rendering": config.chat_rendering or trained.get("chat_rendering", "amapo"),  # the tokens it was trained on
    }
    mapping = json.loads(config.column_mapping) if config.column_mapping else None
    results: dict[str, dict[str, float]] = {}
    margins: dict[str, np.ndarray] = {}
    for entry in config.datasets:
        name, source, split = parse_named_set(entry)
        pairs = load_preference_dataset(resolve_source(source), split=split, column_mapping=mapping)
        tokenized = tokenize_dataset(pairs, tokenizer, **limits)
        logps = compute_pair_logps(
            model, tokenized, pad_token_id=tokenizer.pad_token_id, batch_size=config.batch_size, ref_model=ref_model
        )
        scores = score_with_loss(logps, loss_fn, config.batch_size)
        results[name] = {"pairs": float(len(scores.scores)), **scores.summary()}
        if {"chosen_reward", "rejected_reward"} <= set(pairs.column_names):
            results[name]["true_reward_accuracy"] = true_reward_accuracy(scores, pairs)
        if config.generate:
            results[name].update(
                generation_metrics(model, tokenizer, pairs, config, name, is_builtin(source), output_dir)
            )
        margins[name] = scores.scores
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    if margins:
        plot_margin_histograms(margins, output_dir / "reward_margins.png")
    print_eval_table(results, console)
    return results


def true_reward_accuracy(scores: PairScores, pairs) -> float:
    """Share of pairs whose implicit reward order matches the known true reward's (ties in truth skipped)."""
    truth = np.sign(np.asarray(pairs["chosen_reward"]) - np.asarray(pairs["rejected_reward"]))
    decided = truth != 0
    return float((np.sign(scores.scores[decided]) == truth[decided]).mean()) if decided.any() else float("nan")


def generation_metrics(model, tokenizer, pairs, config: EvalConfig, name: str, builtin: bool, output_dir: Path):
    prompts = list(pairs["prompt"][: config.max_generations])
    answers = generate_responses(
        model,
        tokenizer,
        prompts,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    write_alpacaeval(
        output_dir / f"alpacaeval_{name}.json", prompts, answers, Path(config.model_name_or_path).name, name
    )
    lengths = [len(tokenizer(a, add_special_tokens=False).input_ids) for a in answers]
    metrics = {"generation/length": float(np.mean(lengths)) if lengths else 0.0}
    if builtin:  # the built-in task knows the true reward of any answer
        metrics["generation/true_reward"] = float(
            np.mean([true_reward(p, a) for p, a in zip(prompts, answers, strict=True)])
        )
    return metrics


def print_eval_table(results: dict[str, dict[str, float]], console: Console) -> None:
    columns = ["accuracy", "reward_margin/mean", "gradient/overfitting", "gradient/underfitting",
               "generation/true_reward", "generation/length"]  # fmt: skip
    print_metric_table("amapo eval", "set", results, columns, console)
