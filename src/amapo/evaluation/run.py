"""``amapo eval``: ranking accuracy (and, optionally, generations) of a model on named preference sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from amapo.attention_names import check_attention_installed
from amapo.builtin import is_builtin, resolve_source
from amapo.builtin.recipe_options import BUILTIN_MODEL, builtin_model_options
from amapo.builtin.task import true_reward
from amapo.console import print_table
from amapo.data.sources import looks_local
from amapo.errors import UserError
from amapo.evaluation.generation import write_alpacaeval
from amapo.evaluation.options import EvalConfig
from amapo.evaluation.plots import plot_margin_histograms
from amapo.evaluation.response_sets import RM_BENCH, RM_BENCH_DOMAINS, RM_BENCH_STYLES, ResponseSet
from amapo.evaluation.scoring import PairScores, score_set
from amapo.evaluation.sets import (
    SET_EXAMPLE,
    EvalSet,
    column_mapping,
    given_sets,
    load_set,
    run_role_mapping,
    run_sets,
    token_limits,
)
from amapo.losses import PreferenceLoss, build_loss, loss_spec
from amapo.model.generate import generate_responses
from amapo.model.loading import best_device, check_positions, check_weights, load_model, load_tokenizer
from amapo.option_checks import check_data_path, check_method, check_model_path
from amapo.output_folder import (
    check_no_previous_results,
    check_writable_folder,
    remove_previous_results,
)
from amapo.run_files import CONFIG_FILE

RESULTS_FILE = "eval_results.json"
RESULT_FILES = (RESULTS_FILE, "reward_margins.png", "scores_*.jsonl", "alpacaeval_*.json")  # what run_eval writes
__all__ = ["EvalConfig", "run_eval"]


def trained_config(model_dir: str) -> dict[str, Any]:
    """The resolved config an ``amapo train`` run saved beside its model, the options recipe ``builtin`` gives the
    built-in model (``builtin_model_options``: it is scored as `amapo train` would train it), or {} for other
    models."""
    if model_dir == BUILTIN_MODEL:
        return builtin_model_options()
    path = Path(model_dir).expanduser() / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the run's options in {path}: {' '.join(str(err).split())}") from None
    if not isinstance(values, dict):
        raise UserError(f"{path} is not the options of an `amapo train` run (not a mapping)")
    return values


def loss_for_model(
    method: str | None, trained: dict[str, Any], beta: float | None = None, option: str = "method"
) -> PreferenceLoss:
    """The method's loss with the options the model was trained with (so its reward definition)."""
    name = method or trained.get("method")
    if name is None:
        raise UserError(
            f"the model has no {CONFIG_FILE} of an `amapo train` run to say how it was trained: pass --{option} "
            "(e.g. --method simpo) to choose whose implicit reward ranks the pairs"
        )
    check_method(option, name)
    accepted = loss_spec(name).defaults()
    options = {
        k: trained[k] for k in accepted if k in trained and trained[k] is not None and name == trained.get("method")
    }
    if beta is not None:
        options["beta"] = beta
    try:
        return build_loss(name, **options)
    except ValueError as err:  # an option the method does not take, or a value it refuses
        raise UserError(f"--{option} {name}: {err}") from None


def reference_source(trained: dict[str, Any], override: str | None, methods: str) -> str:
    """The reference model of reference-based ``methods``: ``--ref_model_name_or_path``, else the run's reference,
    else the run's initial policy; checked to exist where it is clearly a local path."""
    if override:
        return override
    source = trained.get("ref_model_name_or_path") or trained.get("model_name_or_path")
    if source is None:
        raise UserError(
            f"{methods} scores against a reference model and the model has no {CONFIG_FILE} naming one: pass "
            "--ref_model_name_or_path (usually the model before preference training)"
        )
    if not is_builtin(source) and looks_local(source) and not Path(source).expanduser().exists():
        raise UserError(
            f"the run's reference model {source} ({CONFIG_FILE}) is not found (looked in "
            f"{Path(source).expanduser().absolute()}): pass --ref_model_name_or_path"
        )
    return source


def check_model_positions(model_path: str, max_length: int) -> None:
    """``max_length`` fits the model's positions (read from its config, which is cheap; unreadable: left to loading)."""
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        return
    check_positions(max_length, model_config, model_path)


def check_model_weights(model: str, ref_source: str | None) -> None:
    """The weights of the model and its reference are whole (headers only: cheap), before anything is tokenized."""
    check_weights(resolve_source(model), named=f"--model_name_or_path {model}")
    if ref_source is not None:
        check_weights(resolve_source(ref_source), named=f"the reference model {ref_source}")


def output_folder(given: str | None, model: str, model_path: str, name: str) -> Path:
    """``--output_dir``, else ``name`` in the model's folder; the built-in model's folder is amapo's cache, not
    the user's, so its results go to ./tiny-llama/``name`` as a Hub id's go to ./ORG/MODEL/``name``."""
    if given:
        return Path(given).expanduser()
    return Path(model.removeprefix("builtin:") if is_builtin(model) else model_path) / name


def load_models(model_path: str, ref_source: str | None, attn_implementation: str | None = None):
    """(model, reference or None) on the best device, with ``attn_implementation`` (None: transformers' default)."""
    device = best_device()
    model = load_model(model_path, device=device, attn_implementation=attn_implementation)
    reference = None
    if ref_source is not None:
        reference = load_model(resolve_source(ref_source), device=device, attn_implementation=attn_implementation)
    return model, reference


def print_metric_table(title: str, key_name: str, results: dict[str, dict[str, float]], columns, console) -> None:
    """One row per key of ``results``, one column per metric that any row has."""
    shown = [c for c in columns if any(c in r for r in results.values())]
    table = Table(title=title)
    table.add_column(key_name)
    for column in shown:
        table.add_column(column, justify="right")
    for name, metrics in results.items():
        table.add_row(name, *(f"{metrics[c]:.3f}" if c in metrics else "-" for c in shown))
    print_table(table, console)


def say(console: Console, text: str) -> None:
    """One line as written: no markup (splits hold brackets: "train[:90%]"), no wrapping at the console's width."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def eval_sets(config: EvalConfig, trained: dict[str, Any], console: Console) -> list[EvalSet]:
    """``--datasets``, else the eval sets of the training run in the model folder (announced in one line)."""
    if config.datasets:
        return given_sets("datasets", config.datasets)
    sets = run_sets(trained, config.model_name_or_path)
    if not sets:
        why = (
            f"the run in {config.model_name_or_path} had no eval sets (no eval_split or eval_datasets in its "
            f"{CONFIG_FILE})"
            if trained
            else f"{config.model_name_or_path} has no {CONFIG_FILE} of an `amapo train` run to take them from"
        )
        raise UserError(f"no eval sets: pass --datasets NAME=SOURCE[@SPLIT] ..., e.g. --datasets {SET_EXAMPLE}; {why}")
    names = ", ".join(f"{s.name}={s.source}@{s.split}" for s in sets)
    whose = "the built-in model" if config.model_name_or_path == BUILTIN_MODEL else "the run"
    say(console, f"amapo eval: no --datasets given: using the eval sets of {whose} ({sets[0].origin}): {names}")
    return sets


def run_eval(config: EvalConfig, console: Console | None = None) -> dict[str, dict[str, float]]:
    """Per eval set: ranking accuracy, reward-margin distribution, gradient indicators (and generations).

    Everything that can fail on the user's input fails first: options, paths, the method, the output folder (that it
    can be written; not made), the models' weights (their headers), then every set loaded and tokenized (the
    tokenizer is cheap), and a folder that holds earlier results (unless ``overwrite_output_dir``), before the model
    loads; the output folder is made only when the results are ready. Writes ``eval_results.json``,
    ``reward_margins.png`` (pairs sets), ``scores_<set>.jsonl`` (each response's reward, sets of several responses
    per prompt) and, with ``generate``, ``alpacaeval_<set>.json`` (``RESULT_FILES``)."""
    console = console or Console()
    check_model_path("model_name_or_path", config.model_name_or_path)
    check_model_path("ref_model_name_or_path", config.ref_model_name_or_path)
    trained = trained_config(config.model_name_or_path)
    sets = eval_sets(config, trained, console)
    for eval_set in sets:
        check_data_path(eval_set.label, eval_set.source)
    loss_fn = loss_for_model(config.method, trained, config.beta)
    ref_source = None
    if loss_fn.needs_reference:
        method = config.method or trained.get("method")
        ref_source = reference_source(trained, config.ref_model_name_or_path, f"method {method!r}")
    mapping, note = column_mapping(config.column_mapping, trained)
    if note:
        say(console, f"amapo eval: using {note}")
    limits = token_limits(
        trained,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        truncation_mode=config.truncation_mode,
        chat_rendering=config.chat_rendering,
    )
    model_path = resolve_source(config.model_name_or_path)
    output_dir = output_folder(config.output_dir, config.model_name_or_path, model_path, "eval")
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file: give a folder for the results")
    check_writable_folder(output_dir, "--output_dir")
    check_model_positions(model_path, limits["max_length"])
    check_model_weights(config.model_name_or_path, ref_source)
    check_attention_installed(config.attn_implementation)
    tokenizer = load_tokenizer(model_path)
    roles = run_role_mapping(trained)
    data = {s.name: load_set(s, tokenizer, limits, mapping, note, roles) for s in sets}  # all checked before scoring
    if not config.overwrite_output_dir:  # (after the sets: a mistake in them is the first thing to fix)
        check_no_previous_results(output_dir, RESULT_FILES, "eval")

    model, ref_model = load_models(model_path, ref_source, config.attn_implementation)
    results: dict[str, dict[str, float]] = {}
    margins: dict[str, np.ndarray] = {}
    answers: dict[str, tuple[list[str], list[str]]] = {}
    per_response: dict[str, np.ndarray] = {}
    for eval_set in sets:
        loaded = data[eval_set.name]
        scored = score_set(
            model, loaded, loss_fn, pad_token_id=tokenizer.pad_token_id, batch_size=config.batch_size,
            ref_model=ref_model,
        )  # fmt: skip
        results[eval_set.name] = scored.metrics
        if scored.pairs is not None:
            margins[eval_set.name] = scored.pairs.scores
            if {"chosen_reward", "rejected_reward"} <= set(loaded.pairs.column_names):
                results[eval_set.name]["true_reward_accuracy"] = true_reward_accuracy(scored.pairs, loaded.pairs)
        else:
            per_response[eval_set.name] = scored.responses
        if config.generate:
            metrics, answers[eval_set.name] = generation_metrics(
                model, tokenizer, loaded.prompts(), config, is_builtin(eval_set.source)
            )
            results[eval_set.name].update(metrics)

    output_dir.mkdir(parents=True, exist_ok=True)
    if config.overwrite_output_dir:  # the earlier results go only now that this run's are ready
        remove_previous_results(output_dir, RESULT_FILES)
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    for name, scores in per_response.items():
        write_response_scores(output_dir / f"scores_{name}.jsonl", data[name].responses, scores)
    for name, (prompts, outputs) in answers.items():
        write_alpacaeval(
            output_dir / f"alpacaeval_{name}.json", prompts, outputs, Path(config.model_name_or_path).name, name
        )
    if margins:
        plot_margin_histograms(margins, output_dir / "reward_margins.png")
    print_eval_table(results, console)
    for name, loaded in data.items():
        if loaded.format == RM_BENCH:
            print_rm_bench_table(name, results[name], console)
    return results


def true_reward_accuracy(scores: PairScores, pairs) -> float:
    """Share of pairs whose implicit reward order matches the known true reward's (ties in truth skipped)."""
    truth = np.sign(np.asarray(pairs["chosen_reward"]) - np.asarray(pairs["rejected_reward"]))
    decided = truth != 0
    return float((np.sign(scores.scores[decided]) == truth[decided]).mean()) if decided.any() else float("nan")


def generation_metrics(model, tokenizer, prompts: list, config: EvalConfig, builtin: bool):
    """(length and, on the built-in task, true reward of sampled answers; (prompts, answers))."""
    prompts = prompts[: config.max_generations]
    answers = generate_responses(
        model,
        tokenizer,
        prompts,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    lengths = [len(tokenizer(a, add_special_tokens=False).input_ids) for a in answers]
    metrics = {"generation/length": float(np.mean(lengths)) if lengths else 0.0}
    if builtin:  # the built-in task knows the true reward of any answer
        metrics["generation/true_reward"] = float(
            np.mean([true_reward(p, a) for p, a in zip(prompts, answers, strict=True)])
        )
    return metrics, (prompts, answers)


def write_response_scores(path: Path, responses: ResponseSet, scores: np.ndarray) -> None:
    """Each row's reward per response: for RM-Bench in its own result fields (``score_chosen``, ``score_rejected``,
    styles in its order), so its ``compute_accuracy`` can re-read them; else beside the gold scores."""
    with path.open("w") as out:
        for index, row_scores in enumerate(scores.tolist()):
            if responses.format == RM_BENCH:
                row = {"id": responses.ids[index], "domain": responses.domains[index],
                       "score_chosen": row_scores[:3], "score_rejected": row_scores[3:]}  # fmt: skip
            else:
                row = {"row": index, "scores": row_scores, "all_scores": responses.gold[index].tolist()}
            out.write(json.dumps(row) + "\n")


def print_eval_table(results: dict[str, dict[str, float]], console: Console) -> None:
    columns = ["accuracy", "accuracy/all_pairs", "kendall_tau", "rm_bench/easy", "rm_bench/normal", "rm_bench/hard",
               "reward_margin/mean", "gradient/overfitting", "gradient/underfitting", "generation/true_reward",
               "generation/length"]  # fmt: skip
    print_metric_table("amapo eval", "set", results, columns, console)


def print_rm_bench_table(name: str, metrics: dict[str, float], console: Console) -> None:
    """RM-Bench's own table: per domain and overall, easy / normal / hard and their average."""
    rows = {}
    for domain in (*RM_BENCH_DOMAINS, None):
        prefix = "rm_bench" if domain is None else f"rm_bench/{domain}"
        if domain is not None and prefix not in metrics:
            continue
        average = metrics["accuracy"] if domain is None else metrics[prefix]
        rows[domain or "overall"] = {**{k: metrics[f"{prefix}/{k}"] for k in ("easy", "normal", "hard")},
                                     "avg": average}  # fmt: skip
    print_metric_table(f"RM-Bench: {name}", "domain", rows, ["easy", "normal", "hard", "avg"], console)
    matrix = {
        f"chosen {c}": {f"rejected {r}": metrics[f"rm_bench/matrix/{c}_vs_{r}"] for r in RM_BENCH_STYLES}
        for c in RM_BENCH_STYLES
    }
    columns = [f"rejected {r}" for r in RM_BENCH_STYLES]
    print_metric_table(f"RM-Bench: {name}, style matrix (mean over domains)", "", matrix, columns, console)
