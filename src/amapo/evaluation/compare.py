"""``amapo compare``: train several methods on the same data, seeds and budget; evaluate all; write a report.

Each run is an ordinary ``amapo train`` run (its folder holds its recipe, model and metrics); the report is
built only from what those runs measured. Every method uses its own paper defaults for its loss options
unless a beta sweep sets beta.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from amapo.builtin import is_builtin, resolve_source
from amapo.builtin.task import true_reward
from amapo.data import load_preference_dataset
from amapo.errors import UserError
from amapo.evaluation.analysis import accuracy_curves_from_metrics
from amapo.evaluation.checks import check_method, check_number
from amapo.evaluation.generation import generate_responses
from amapo.evaluation.report import write_report
from amapo.evaluation.scoring import compute_pair_logps, score_with_loss
from amapo.evaluation.sets import parse_named_set
from amapo.train.options import LOSS_OPTIONS
from amapo.train.parsing import load_recipe, parse_train_args
from amapo.train.preflight import check_local_path, dataset_sources
from amapo.train.run import prepare_split, run_training

DEFAULT_METHODS = [
    "dpo",
    "simpo",
    "amapo",
    "amapo-no-znorm",
    "amapo-no-exp",
    "amapo-no-adaptive",
    "amapo-no-zero-margin",
]


@dataclass
class CompareConfig:
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS), metadata={"help": "Methods to train."})
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "Seeds (at least 3 for spreads)."})
    recipe: str = field(default="builtin", metadata={"help": "Training recipe shared by all runs (path or name)."})
    beta_sweep: list[float] = field(
        default_factory=list, metadata={"help": "Betas to sweep (sweep mode: each method x beta x seed)."}
    )
    output_dir: str = field(default="reports/compare", metadata={"help": "Report folder; runs go in runs/."})
    max_steps: int = field(default=-1, metadata={"help": "Training budget per run in steps (-1: the recipe's)."})
    eval_steps: int = field(default=64, metadata={"help": "Evaluate every N steps (accuracy curves)."})
    analysis_set: str = field(default="in_distribution", metadata={"help": "Eval set for the gradient indicators."})
    generate: bool = field(default=True, metadata={"help": "Sample answers and measure length and true reward."})
    generation_sets: list[str] = field(
        default_factory=lambda: ["in_distribution", "prompt_ood"], metadata={"help": "Eval sets to answer."}
    )
    max_generations: int = field(default=128, metadata={"help": "Prompts answered per set and run."})
    max_new_tokens: int = field(default=16, metadata={"help": "Tokens per answer."})

    def __post_init__(self) -> None:
        """Every option that can be checked alone, as a ``UserError`` naming it (``check_compare`` checks the runs)."""
        for option, values, example in (
            ("methods", self.methods, "--methods simpo amapo"),
            ("seeds", self.seeds, "--seeds 1 2 3"),
        ):
            if not values:
                raise UserError(f"--{option} needs at least one value, e.g. {example}")
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            if twice:  # two runs would share a folder
                raise UserError(f"--{option} lists {', '.join(twice)} twice: give each once")
        for method in self.methods:
            check_method("methods", method)
        for beta in self.beta_sweep:
            check_number("beta_sweep", beta, "> 0")
        if len(set(self.beta_sweep)) != len(self.beta_sweep):
            raise UserError(f"--beta_sweep lists a beta twice: {' '.join(f'{b:g}' for b in self.beta_sweep)}")
        if self.max_steps != -1 and self.max_steps < 1:
            raise UserError(f"--max_steps must be -1 (the recipe's budget) or >= 1, got {self.max_steps}")
        for option in ("eval_steps", "max_generations", "max_new_tokens"):
            check_number(option, getattr(self, option), ">= 1")


@dataclass
class RunResult:
    """What one (method, beta, seed) run measured."""

    method: str
    seed: int
    beta: float | None
    run_dir: str
    accuracy: dict[str, float]  # eval set -> ranking accuracy after training
    accuracy_before: dict[str, float]
    gradient: dict[str, float]  # indicators on the analysis set, with the run's own method
    generation: dict[str, float]
    curve: dict[str, list[list[float]]]  # eval set -> [[step, accuracy], ...]


def recipe_values(config: CompareConfig, method: str, seed: int, beta: float | None, run_dir: Path) -> dict:
    """This run's recipe: the shared one, loss options reset to the method's defaults, compare's schedule."""
    values = {k: v for k, v in load_recipe(config.recipe).items() if k not in LOSS_OPTIONS}
    values.update(
        method=method,
        seed=seed,
        output_dir=str(run_dir),
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        report_to="none",
        save_strategy="no",
        overwrite_output_dir=True,  # compare owns its run folders
    )
    if beta is not None:
        values["beta"] = beta
    if config.max_steps > 0:
        values["max_steps"] = config.max_steps
    return values


def parse_recipe(values: dict, folder: Path):
    """The checked ``TrainConfig`` of ``values``, written as ``folder/recipe.yaml`` (parsed as ``amapo train``)."""
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values, sort_keys=True))
    return parse_train_args(["--config", str(recipe)])


def run_tag(method: str, beta: float | None) -> str:
    return method if beta is None else f"{method}-beta{beta:g}"


def check_compare(config: CompareConfig) -> None:
    """Before the first run trains: every (method, beta) run's options parse as ``amapo train`` would, the recipe's
    model and data paths exist, and the analysis and generation sets are eval sets of the recipe."""
    output_dir = Path(config.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file: give a folder for the report and its runs")
    try:
        load_recipe(config.recipe)
    except UserError as err:
        raise UserError(f"--recipe: {str(err).removeprefix('--config: ')}") from None
    betas: list[float | None] = list(config.beta_sweep) or [None]
    with tempfile.TemporaryDirectory() as tmp:
        for method in config.methods:
            for beta in betas:
                values = recipe_values(config, method, config.seeds[0], beta, output_dir / "runs" / "check")
                try:
                    train_config = parse_recipe(values, Path(tmp))
                except UserError as err:
                    raise UserError(f"--recipe {config.recipe} for the {run_tag(method, beta)} runs: {err}") from None
    try:
        for option in ("model_name_or_path", "ref_model_name_or_path"):
            check_local_path(option, getattr(train_config, option))
        for option, source in dataset_sources(train_config):
            check_local_path(option, source, data=True)
    except UserError as err:
        raise UserError(f"--recipe {config.recipe}: {err}") from None
    sets = sorted(parse_named_set(entry)[0] for entry in train_config.eval_datasets)
    wanted = [("analysis_set", config.analysis_set)]
    if config.generate:
        wanted += [("generation_sets", name) for name in config.generation_sets]
    for option, name in wanted:
        if name not in sets:
            raise UserError(
                f"--{option} {name} is not an eval set of the recipe {config.recipe} (its eval_datasets: "
                f"{', '.join(sets) or 'none'}): name one of them"
            )


def run_recipe(config: CompareConfig, method: str, seed: int, beta: float | None, run_dir: Path):
    """Write this run's recipe into its folder and train it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    train_config = parse_recipe(recipe_values(config, method, seed, beta, run_dir), run_dir)
    return train_config, run_training(train_config)


def accuracy_by_set(metrics: dict[str, float]) -> dict[str, float]:
    suffix = "_rewards/accuracies"
    return {k.removeprefix("eval_").removesuffix(suffix): v for k, v in metrics.items() if k.endswith(suffix)}


def measure_run(config: CompareConfig, train_config, run_dir: Path) -> tuple[dict, dict, tuple]:
    """Gradient indicators on the analysis set and generation metrics, from the saved model."""
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model = AutoModelForCausalLM.from_pretrained(run_dir)
    loss_fn = train_config.build_loss()
    ref_model = None
    if loss_fn.needs_reference:
        ref_model = AutoModelForCausalLM.from_pretrained(resolve_source(train_config.model_name_or_path))
    sets = {name: (source, split) for name, source, split in map(parse_named_set, train_config.eval_datasets)}
    source, split = sets[config.analysis_set]
    tokenized = prepare_split(source, split, tokenizer, train_config, loss_fn.needs_offsets)
    batch = train_config.per_device_train_batch_size  # AMaPO's statistics over a training-sized batch
    logps = compute_pair_logps(
        model, tokenized, pad_token_id=tokenizer.pad_token_id, batch_size=batch, ref_model=ref_model
    )
    scores = score_with_loss(logps, loss_fn, batch)
    generation = {}
    if config.generate:
        for name in config.generation_sets:
            source, split = sets[name]
            prompts = list(load_preference_dataset(resolve_source(source), split=split)["prompt"])
            prompts = prompts[: config.max_generations]
            answers = generate_responses(model, tokenizer, prompts, max_new_tokens=config.max_new_tokens, batch_size=64)
            lengths = [len(tokenizer(a, add_special_tokens=False).input_ids) for a in answers]
            generation[f"{name}/length"] = float(np.mean(lengths))
            if is_builtin(source):
                generation[f"{name}/true_reward"] = float(
                    np.mean([true_reward(p, a) for p, a in zip(prompts, answers, strict=True)])
                )
    return scores.gradient_indicators(), generation, (scores.scores, scores.grad_weights)


def run_compare(config: CompareConfig, console: Console | None = None) -> Path:
    """Train and measure every (method, beta, seed), then write the report; returns the report file."""
    console = console or Console()
    check_compare(config)
    output_dir = Path(config.output_dir)
    betas: list[float | None] = list(config.beta_sweep) or [None]
    results: list[RunResult] = []
    points: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for method in config.methods:
        for beta in betas:
            for seed in config.seeds:
                tag = run_tag(method, beta)
                run_dir = output_dir / "runs" / f"{tag}-seed{seed}"
                console.print(f"[bold]compare[/bold]: training {tag}, seed {seed}")
                train_config, trained = run_recipe(config, method, seed, beta, run_dir)
                gradient, generation, pair_points = measure_run(config, train_config, run_dir)
                if seed == config.seeds[0]:
                    points[tag] = pair_points
                curves = accuracy_curves_from_metrics(run_dir / "metrics.jsonl")
                results.append(
                    RunResult(
                        method=method,
                        seed=seed,
                        beta=beta,
                        run_dir=str(run_dir),
                        accuracy=accuracy_by_set(trained.eval_after),
                        accuracy_before=accuracy_by_set(trained.eval_before),
                        gradient=gradient,
                        generation=generation,
                        curve={k: np.stack(v, axis=1).tolist() for k, v in curves.items()},
                    )
                )
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "runs.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    report = write_report(config, results, points, output_dir)
    console.print(f"report: {report}")
    return report
