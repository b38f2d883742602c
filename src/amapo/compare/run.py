"""``amapo compare``: train several methods on the same data, seeds and budget; evaluate all; write a report.

Each run is an ordinary ``amapo train`` run (its folder holds its recipe, model and metrics); the report is
built only from what those runs measured. Every method uses its own paper defaults for its loss options
unless a beta sweep sets beta. For a seed, every method trains on the same data in the same order, and every
final model is scored on the same held-out pairs and answers the same prompts, so the report compares methods
pair by pair (``amapo.compare.statistics``). The runs evaluate only the analysis set during training (the
accuracy curves, at the recipe's size); the held-out sets are scored once, on the final model, at
``--eval_pairs`` pairs each for the built-in task's sets.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console

from amapo.builtin import is_builtin, resolve_source
from amapo.builtin.task import TaskSpec, true_reward
from amapo.compare.config import RUNS_FILE, CompareConfig, RunResult, write_runs
from amapo.compare.report import REPORT_FILE, write_report
from amapo.data import load_preference_dataset
from amapo.data.sources import check_local_path, parse_named_set
from amapo.errors import UserError
from amapo.evaluation.analysis import accuracy_curves_from_metrics
from amapo.evaluation.scoring import PairScores, compute_pair_logps, score_set, score_with_loss
from amapo.evaluation.sets import LoadedSet, given_sets, load_set, token_limits
from amapo.losses import build_loss
from amapo.model.generate import generate_responses
from amapo.model.loading import check_weights, load_model, load_tokenizer
from amapo.option_checks import check_data_path
from amapo.output_folder import check_no_previous_results, check_writable_folder
from amapo.train.options import LOSS_OPTIONS
from amapo.train.parsing import load_recipe, parse_train_args
from amapo.train.preflight import dataset_sources
from amapo.train.run import prepare_split, run_training


def recipe_values(
    config: CompareConfig, method: str, seed: int, beta: float | None, run_dir: Path, all_sets: bool = False
) -> dict:
    """This run's recipe: the shared one, loss options reset to the method's defaults, compare's schedule. Its
    only eval set is the analysis set (the accuracy curve; compare scores the held-out sets on the final model),
    unless ``all_sets``."""
    values = {k: v for k, v in load_recipe(config.recipe).items() if k not in LOSS_OPTIONS}
    if not all_sets:  # a recipe without eval sets keeps its own default either way
        values["eval_datasets"] = [
            e for e in values.get("eval_datasets") or [] if parse_named_set(e)[0] == config.analysis_set
        ]
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


def check_compare(config: CompareConfig):
    """Before the first run trains: the output folder can be written, every (method, beta) run's options parse as
    ``amapo train`` would, the recipe's model and data paths exist (its models' weights whole), and the analysis and
    generation sets are eval sets of the recipe. Returns the parsed options of the last run checked (what the runs
    share: model, data, token limits)."""
    output_dir = Path(config.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file: give a folder for the report and its runs")
    check_writable_folder(output_dir, "--output_dir")
    if not config.overwrite_output_dir:  # hours of runs are not replaced by a command repeated by mistake
        check_no_previous_results(output_dir, (REPORT_FILE, RUNS_FILE), "compare")
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
        values = recipe_values(config, method, config.seeds[0], beta, output_dir / "runs" / "check", all_sets=True)
        train_config = parse_recipe(values, Path(tmp))  # what the runs share, with every held-out set
    try:
        for option in ("model_name_or_path", "ref_model_name_or_path"):
            check_local_path(option, getattr(train_config, option))
        for option, source in dataset_sources(train_config):
            check_local_path(option, source, data=True)
        for option in ("model_name_or_path", "ref_model_name_or_path"):  # headers only, before the base is scored
            if source := getattr(train_config, option):
                check_weights(resolve_source(source), named=f"{option} {source}")
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
    for eval_set in given_sets("eval_datasets", config.eval_datasets):
        check_data_path(eval_set.label, eval_set.source)
    scored_sets(config, train_config)  # --eval_pairs fits the built-in pools
    return train_config


def scored_sets(config: CompareConfig, train_config) -> dict[str, tuple[str, str]]:
    """The recipe's held-out sets as compare scores them, name -> (source, split): a built-in set's first
    ``--eval_pairs`` pairs, any other set whole (as the recipe names it)."""
    pool = TaskSpec().eval_pool
    if any(is_builtin(parse_named_set(e)[1]) for e in train_config.eval_datasets) and config.eval_pairs > pool:
        raise UserError(
            f"--eval_pairs {config.eval_pairs}: the built-in held-out sets hold {pool} pairs each; give at most {pool}"
        )
    sets = {}
    for name, source, split in map(parse_named_set, train_config.eval_datasets):
        sets[name] = (source, f"train[:{config.eval_pairs}]") if is_builtin(source) else (source, split)
    return sets


def load_benchmark_sets(config: CompareConfig, train_config) -> dict[str, LoadedSet]:
    """``--eval_datasets`` read, checked and tokenized as the runs' data is (their tokenizer and token limits),
    before any run trains: a bad row is one line, not a failure after the first training."""
    if not config.eval_datasets:
        return {}
    tokenizer = load_tokenizer(resolve_source(train_config.model_name_or_path))
    limits = token_limits(
        {},
        max_length=train_config.max_length,
        max_prompt_length=train_config.max_prompt_length,
        truncation_mode=train_config.truncation_mode,
        chat_rendering=train_config.chat_rendering,
    )
    return {s.name: load_set(s, tokenizer, limits, None) for s in given_sets("eval_datasets", config.eval_datasets)}


def run_recipe(config: CompareConfig, method: str, seed: int, beta: float | None, run_dir: Path):
    """Write this run's recipe into its folder and train it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    train_config = parse_recipe(recipe_values(config, method, seed, beta, run_dir), run_dir)
    return train_config, run_training(train_config)


def tokenize_sets(sets: dict[str, tuple[str, str]], train_config, needs_offsets: bool) -> dict:
    """Every held-out set read and tokenized once for all runs (they share the base model's tokenizer)."""
    tokenizer = load_tokenizer(resolve_source(train_config.model_name_or_path))
    return {
        name: prepare_split(src, split, tokenizer, train_config, needs_offsets) for name, (src, split) in sets.items()
    }


def score_sets(
    model, tokenized: dict, loss_fn, train_config, pad_token_id: int, ref_model=None
) -> dict[str, PairScores]:
    """Each held-out set scored by ``loss_fn``; AMaPO's statistics over batches of the training batch size."""
    out = {}
    for name, dataset in tokenized.items():
        logps = compute_pair_logps(
            model,
            dataset,
            pad_token_id=pad_token_id,
            batch_size=train_config.per_device_eval_batch_size,
            ref_model=ref_model,
        )
        out[name] = score_with_loss(logps, loss_fn, train_config.per_device_train_batch_size)
    return out


def bits(ranked: np.ndarray) -> str:
    """Pairs ranked right as a string of 0 and 1, in set order: compact in ``runs.json``, read by the report."""
    return "".join("1" if right else "0" for right in ranked)


def score_base(train_config, tokenized: dict) -> dict:
    """The initial policy ranked by mean log-prob (the reward of SimPO and AMaPO), once for the comparison."""
    source = resolve_source(train_config.model_name_or_path)
    model, tokenizer = load_model(source), load_tokenizer(source)
    scores = score_sets(model, tokenized, build_loss("simpo"), train_config, tokenizer.pad_token_id)
    return {
        "accuracy": {name: s.accuracy() for name, s in scores.items()},
        "ranked_right": {name: bits(s.ranked_correctly) for name, s in scores.items()},
    }


def measure_run(
    config: CompareConfig, train_config, run_dir: Path, sets: dict, tokenized: dict, benchmark_sets: dict
) -> dict:
    """Everything the report reads of one trained model: accuracy and pairs ranked right per held-out set, gradient
    indicators on the analysis set, generation metrics per prompt, and the ``--eval_datasets`` numbers."""
    tokenizer = load_tokenizer(str(run_dir))
    model = load_model(str(run_dir))
    loss_fn = train_config.build_loss()
    ref_model = None
    if loss_fn.needs_reference:
        ref_model = load_model(resolve_source(train_config.model_name_or_path))
    scores = score_sets(model, tokenized, loss_fn, train_config, tokenizer.pad_token_id, ref_model)
    analysis = scores[config.analysis_set]
    batch = train_config.per_device_train_batch_size
    benchmarks = {
        name: score_set(
            model, loaded, loss_fn, pad_token_id=tokenizer.pad_token_id, batch_size=batch, ref_model=ref_model
        ).metrics
        for name, loaded in benchmark_sets.items()
    }
    generation, per_prompt = {}, {}
    if config.generate:
        for name in config.generation_sets:
            source, split = sets[name]
            prompts = list(load_preference_dataset(resolve_source(source), split=split)["prompt"])
            prompts = prompts[: config.max_generations]
            answers = generate_responses(model, tokenizer, prompts, max_new_tokens=config.max_new_tokens, batch_size=64)
            per_prompt[f"{name}/length"] = [len(tokenizer(a, add_special_tokens=False).input_ids) for a in answers]
            if is_builtin(source):
                per_prompt[f"{name}/true_reward"] = [
                    round(true_reward(p, a), 6) for p, a in zip(prompts, answers, strict=True)
                ]
        generation = {key: float(np.mean(values)) for key, values in per_prompt.items()}
    return {
        "accuracy": {name: s.accuracy() for name, s in scores.items()},
        "ranked_right": {name: bits(s.ranked_correctly) for name, s in scores.items()},
        "gradient": analysis.gradient_indicators(),
        "generation": generation,
        "per_prompt": per_prompt,
        "benchmarks": benchmarks,
        "points": (analysis.scores, analysis.grad_weights),
    }


def train_and_measure(config: CompareConfig, method: str, seed: int, beta: float | None, shared: dict) -> dict:
    """One (method, beta, seed) run, trained and measured: the fields of its ``RunResult`` and its gradient points.
    ``shared``: the held-out sets (``sets``, ``tokenized``) and ``benchmark_sets``, read once per process."""
    run_dir = Path(config.output_dir) / "runs" / f"{run_tag(method, beta)}-seed{seed}"
    run_config, _ = run_recipe(config, method, seed, beta, run_dir)
    measured = measure_run(config, run_config, run_dir, shared["sets"], shared["tokenized"], shared["benchmark_sets"])
    curves = accuracy_curves_from_metrics(run_dir / "metrics.jsonl")
    curve = {k: np.stack(v, axis=1).tolist() for k, v in curves.items()}
    return {"method": method, "seed": seed, "beta": beta, "run_dir": str(run_dir), "curve": curve, **measured}


def shared_inputs(config: CompareConfig, train_config) -> dict:
    """What every run of a comparison scores on: the held-out sets, tokenized, and the ``--eval_datasets`` sets."""
    sets = scored_sets(config, train_config)
    needs_offsets = any(build_loss(m).needs_offsets for m in config.methods)
    return {
        "sets": sets,
        "tokenized": tokenize_sets(sets, train_config, needs_offsets),
        "benchmark_sets": load_benchmark_sets(config, train_config),
    }


def check_training_rows(config: CompareConfig, train_config) -> None:
    """The training split read and tokenized as every run will (``prepare_split``), so that a row no run can train
    on (one truncated to the same tokens as its pair, say) is one line before the base model is loaded and scored,
    not after; each run tokenizes it again for itself."""
    tokenizer = load_tokenizer(resolve_source(train_config.model_name_or_path))
    needs_offsets = any(build_loss(m).needs_offsets for m in config.methods)
    prepare_split(train_config.dataset, train_config.train_split, tokenizer, train_config, needs_offsets)


_WORKER: dict = {}  # a worker process's shared inputs, read on its first run


def worker_job(config: CompareConfig, method: str, seed: int, beta: float | None) -> dict:
    """A run in a worker process: one thread (every worker, any machine: the same arithmetic), output to the run's
    ``compare.log`` so that parallel runs do not interleave on the terminal."""
    import contextlib

    import torch

    torch.set_num_threads(1)
    run_dir = Path(config.output_dir) / "runs" / f"{run_tag(method, beta)}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "compare.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        if not _WORKER:
            _WORKER.update(shared_inputs(config, check_compare(config)))
        return train_and_measure(config, method, seed, beta, _WORKER)


def run_jobs(config: CompareConfig, jobs: list[tuple], shared: dict, console: Console) -> list[dict]:
    """Every job, in order: in this process with ``--workers 1``, else over that many worker processes."""
    if config.workers == 1:
        out = []
        for method, seed, beta in jobs:
            console.print(f"[bold]compare[/bold]: training {run_tag(method, beta)}, seed {seed}")
            out.append(train_and_measure(config, method, seed, beta, shared))
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    console.print(f"[bold]compare[/bold]: {len(jobs)} runs over {config.workers} worker processes (one thread each; "
                  f"each run's output in its folder's compare.log)")  # fmt: skip
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
    with ProcessPoolExecutor(config.workers, mp_context=context) as pool:
        futures = {pool.submit(worker_job, config, *job): i for i, job in enumerate(jobs)}
        out: list = [None] * len(jobs)
        for done, future in enumerate(as_completed(futures), 1):
            out[futures[future]] = future.result()
            method, seed, beta = jobs[futures[future]]
            console.print(f"[bold]compare[/bold]: {done}/{len(jobs)} done ({run_tag(method, beta)}, seed {seed})")
    return out


def run_compare(config: CompareConfig, console: Console | None = None) -> Path:
    """Train and measure every (method, beta, seed), then write the report; returns the report file."""
    console = console or Console()
    train_config = check_compare(config)
    shared = shared_inputs(config, train_config)
    check_training_rows(config, train_config)  # a bad training row is one line before the base model loads
    base = score_base(train_config, shared["tokenized"])
    output_dir = Path(config.output_dir)
    betas: list[float | None] = list(config.beta_sweep) or [None]
    seeds = [*config.seeds, *config.confirm_seeds]  # the confirmation's runs as the discovery's, on their own seeds
    jobs = [(method, seed, beta) for method in config.methods for beta in betas for seed in seeds]
    results: list[RunResult] = []
    points: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for measured in run_jobs(config, jobs, shared, console):
        tag = run_tag(measured["method"], measured["beta"])
        gradient_points = measured.pop("points")
        if measured["seed"] == config.seeds[0]:
            points[tag] = gradient_points
        results.append(RunResult(**measured))
    output_dir.mkdir(parents=True, exist_ok=True)
    write_runs(output_dir / RUNS_FILE, config, base, results)
    report = write_report(config, results, base, points, output_dir)
    console.print(f"report: {report}")
    return report
