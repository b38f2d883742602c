"""``amapo generate``: a model's answers to a benchmark's questions, in the file its judge reads (see the package).

Everything the user can get wrong fails before the model loads: the options, the question file (every row), the
model's chat template (every conversation rendered once), the answer file to continue and its settings. Then the
questions not yet answered are answered in batches, each batch appended whole; a rerun continues where a run
stopped and gives the file one uninterrupted run would have written.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from amapo.builtin import is_builtin, resolve_source
from amapo.builtin.recipe_options import BUILTIN_MODEL, builtin_model_options
from amapo.console import progress_bar
from amapo.data.chat import read_chat_template
from amapo.errors import UserError
from amapo.generation.answers import AnswerFile
from amapo.generation.formats import answer_row
from amapo.generation.judges import judge_steps
from amapo.generation.options import GenerateConfig
from amapo.generation.prompts import answer_batch, check_prompts
from amapo.generation.questions import Question, QuestionSet, read_questions
from amapo.generation.settings import (
    MT_BENCH_OTHER_TEMPERATURE,
    MT_BENCH_TEMPERATURES,
    Sampling,
    check_continuable,
    read_settings,
    resolve_sampling,
    settings_path,
    template_hash,
    write_settings,
)
from amapo.model.loading import check_weights
from amapo.option_checks import check_model_path
from amapo.output_folder import check_writable_folder
from amapo.seeds import SAMPLER


@dataclass(frozen=True)
class GenerateResult:
    output: Path
    settings: Path
    answered: int  # by this run
    skipped: int  # already in the file


def say(console: Console, text: str) -> None:
    """One line as written: no markup, no wrapping at the console's width."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def read_question_set(config: GenerateConfig) -> QuestionSet:
    path = Path(config.questions).expanduser()
    if not path.exists():
        raise UserError(f"--questions: no such file {config.questions} (looked in {path.absolute()})")
    if not path.is_file():
        raise UserError(f"--questions: {config.questions} is a folder; give the question file")
    questions = read_questions(path, config.benchmark)
    if config.max_questions is not None:
        questions = QuestionSet(questions.path, questions.schema, questions.questions[: config.max_questions])
    return questions


def default_model_id(name: str, model_path: str) -> str:
    """The model folder's name; the part after ``builtin:`` or the last part of a Hub id."""
    if is_builtin(name):
        return name.removeprefix("builtin:")
    if Path(model_path).expanduser().is_dir():
        return Path(model_path).expanduser().resolve().name
    return name.rstrip("/").split("/")[-1]


def answer_path(config: GenerateConfig, model_path: str, model_id: str, benchmark: str) -> Path:
    """``--output``, else the benchmark's file in the model's folder (the current folder for a Hub id, and for the
    built-in model, whose folder is amapo's cache); its folder is checked to be writable, not made."""
    if config.output:
        output = Path(config.output).expanduser()
    else:
        local = Path(model_path).expanduser()
        folder = local if local.is_dir() and not is_builtin(config.model_name_or_path) else Path(".")
        name = "model_outputs.json" if benchmark == "alpaca-eval" else f"{model_id}.jsonl"
        output = folder / "eval" / benchmark / name
    if output.is_dir():
        raise UserError(f"--output {output} is a folder: give the answer file's path")
    check_writable_folder(output.parent, "--output", given=output)
    return output


def open_tokenizer(model_path: str, config: GenerateConfig):
    """The model's tokenizer (cheap, before the model) with a chat template, or a one-line error naming the fix."""
    from amapo.model.loading import load_tokenizer

    template = read_chat_template(config.chat_template) if config.chat_template else None
    try:
        tokenizer = load_tokenizer(model_path, chat_template=template)
    except OSError as err:
        reason = " ".join(str(err).split())[:300]
        raise UserError(
            f"--model_name_or_path {config.model_name_or_path}: cannot load its tokenizer ({reason})"
        ) from None
    if not tokenizer.chat_template:
        raise UserError(
            f"the tokenizer of {config.model_name_or_path} has no chat template (a base model?): pass --chat_template "
            "with Jinja text or a .jinja file, e.g. the template the model was fine-tuned with"
        )
    return tokenizer


def warn_long_prompts(
    model_path: str, todo: list[Question], lengths: list[int], sampling: Sampling, name: str, console: Console
) -> None:
    """A note (not an error) when a prompt plus its answer can run past the model's positions."""
    from amapo.model.loading import model_positions

    positions = model_positions(model_path)
    if positions is None:
        return
    over = [(n, q) for n, q in zip(lengths, todo, strict=True) if n + sampling.max_new_tokens > positions]
    if over:
        longest, question = max(over, key=lambda item: item[0])
        say(
            console,
            f"amapo generate: note: {len(over)} prompt(s) plus --max_new_tokens {sampling.max_new_tokens} can exceed "
            f"the model's {positions} positions (longest: {longest} tokens, {name}:{question.line}); answers past "
            "that point may degrade",
        )


def recorded_settings(
    config: GenerateConfig, questions: QuestionSet, model_path: str, model_id: str, sampling: Sampling, tokenizer
) -> dict:
    """The settings that must match for a rerun to continue the file (``settings.CHECKED``), and for the record
    what the per-category temperatures were."""
    local = Path(model_path).expanduser()
    model = (
        config.model_name_or_path
        if is_builtin(config.model_name_or_path) or not local.is_dir()
        else str(local.resolve())
    )
    settings = {
        "benchmark": questions.schema.benchmark,
        "format": questions.schema.name,
        "model": model,
        "model_id": model_id,
        "chat_template_sha256": template_hash(tokenizer.chat_template),
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_new_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
        "sampler": SAMPLER,
    }
    if sampling.temperature is None:
        settings["temperature_by_category"] = {**MT_BENCH_TEMPERATURES, "(other)": MT_BENCH_OTHER_TEMPERATURE}
    return settings


def run_info(config: GenerateConfig, questions: QuestionSet, model, stop_ids: list[int]) -> dict:
    """What else a reader of the answers may want to know (not checked on a rerun)."""
    import torch
    import transformers

    from amapo import __version__

    info = {
        "seeding": "token k of turn t of question i (its 0-based row in the file) is drawn with the uniform number "
        "uniforms(stream_seed('amapo-generate', seed + i, t), k) of amapo.model.generate (CounterSampler): a hash "
        "of those alone, not of the batch or the device",
        "stop_token_ids": stop_ids,
        "token_len": "counted with the model's tokenizer" if questions.schema.benchmark == "arena-hard" else None,
        "questions": str(questions.path.resolve()),
        "batch_size": config.batch_size,
        "device": str(next(model.parameters()).device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "amapo_version": __version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return {key: value for key, value in info.items() if value is not None}


@dataclass
class Plan:
    """Everything checked before the model loads."""

    questions: QuestionSet
    sampling: Sampling
    model_path: str
    model_id: str
    tokenizer: object
    answers: AnswerFile
    settings: dict
    todo: list[Question]


def make_plan(config: GenerateConfig, console: Console) -> Plan:
    """Options, question rows, chat template, the answer file to continue and its settings: all checked."""
    check_model_path("model_name_or_path", config.model_name_or_path)
    questions = read_question_set(config)
    schema = questions.schema
    max_new_tokens = config.max_new_tokens
    if max_new_tokens is None and config.model_name_or_path == BUILTIN_MODEL:  # its answers fit its recipe's limits
        limits = builtin_model_options()
        max_new_tokens = limits["max_length"] - limits["max_prompt_length"]
    sampling = resolve_sampling(schema.benchmark, config.temperature, config.top_p, max_new_tokens, config.seed)
    model_path = resolve_source(config.model_name_or_path)
    check_weights(model_path, named=f"--model_name_or_path {config.model_name_or_path}")
    model_id = config.model_id or default_model_id(config.model_name_or_path, model_path)
    output = answer_path(config, model_path, model_id, schema.benchmark)
    tokenizer = open_tokenizer(model_path, config)
    lengths = check_prompts(tokenizer, questions)
    answers = AnswerFile(output, schema)
    settings = recorded_settings(config, questions, model_path, model_id, sampling, tokenizer)
    check_continuable(output, len(answers), read_settings(settings_path(output)), settings)
    if answers.dropped_partial_line:
        say(
            console,
            f"amapo generate: the last line of {output} is unfinished (a run stopped while writing it): it is "
            "dropped and its question answered again",
        )
    todo = [q for q in questions.questions if q.key not in answers.keys]
    say(
        console,
        f"amapo generate: {schema.title} ({questions.path.name}): {len(questions.questions)} questions, "
        f"{len(questions.questions) - len(todo)} already answered in {output}",
    )
    if todo:
        warn_long_prompts(model_path, todo, [lengths[q.index] for q in todo], sampling, questions.path.name, console)
    return Plan(questions, sampling, model_path, model_id, tokenizer, answers, settings, todo)


def run_generate(config: GenerateConfig, console: Console | None = None) -> GenerateResult:
    """Answer the questions of ``config.questions`` not yet in the answer file; print where they went and how to
    judge them."""
    console = console or Console()
    plan = make_plan(config, console)
    if plan.todo:
        answer_all(plan, config, console)
    output = plan.answers.path
    say(
        console,
        f"amapo generate: {len(plan.todo)} answers written, {len(plan.answers)} in {output} "
        f"(settings: {settings_path(output)})",
    )
    say(console, "next, judge them with the benchmark's own tools (a paid OpenAI API; outside amapo):")
    for step in judge_steps(plan.questions, output, plan.model_id):
        say(console, f"  {step}")
    skipped = len(plan.questions.questions) - len(plan.todo)
    return GenerateResult(output, settings_path(output), len(plan.todo), skipped)


def answer_all(plan: Plan, config: GenerateConfig, console: Console) -> None:
    """Load the model, record the settings, and answer ``plan.todo`` batch by batch, each batch appended whole."""
    from amapo.model.generate import stop_token_ids
    from amapo.model.loading import best_device, load_model

    tokenizer, answers, schema = plan.tokenizer, plan.answers, plan.questions.schema
    model = load_model(plan.model_path, device=best_device()).eval()
    stop_ids = stop_token_ids(model, tokenizer)
    if len(answers) == 0 or not settings_path(answers.path).is_file():
        write_settings(answers.path, {**plan.settings, **run_info(config, plan.questions, model, stop_ids)})

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    with progress_bar(console, "q") as progress:
        task = progress.add_task(f"{schema.title} answers", total=len(plan.todo))
        for start in range(0, len(plan.todo), config.batch_size):
            batch = plan.todo[start : start + config.batch_size]
            replies = answer_batch(model, tokenizer, batch, plan.sampling, stop_ids, config.decoding)
            rows = [
                answer_row(schema.name, q, r, plan.model_id, count_tokens) for q, r in zip(batch, replies, strict=True)
            ]
            answers.append(rows)
            progress.advance(task, len(batch))
