"""Sampling settings: each benchmark's defaults (and where they come from), and the settings file beside the answers.

Defaults, used where an option is not given:

* AlpacaEval 2: temperature 0.9, top_p 1.0, 4096 new tokens: the AMaPO release's configs for its Llama-3 models
  (Shiroha-Offical/AMaPO, eval/alpacaeval2/configs/Llama-3-{Base,Instruct}-8B-AMaPO.yaml). Its Mistral configs use
  temperature 0.7 (Base) and 0.5 (Instruct) with 2048 new tokens: pass those for Mistral models.
* MT-Bench: FastChat's temperature per question category (fastchat/llm_judge/common.py ``temperature_config``;
  0.7 for a category it does not list, as gen_model_answer.py does), greedy below 1e-4, 1024 new tokens
  (gen_model_answer.py ``--max-new-token``); FastChat sets no top_p: 1.0.
* Arena-Hard: greedy (temperature 0.0), 4096 new tokens: arena-hard-auto's config/gen_answer_config.yaml of v0.1.

The settings file ``<answers>.settings.json`` records what shaped the answers: the settings above, the seed, the
model, a hash of the chat template (and, for reference, amapo's version, the stop tokens, the device). A rerun
that would continue the file with different settings is refused: one file, one way of answering.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amapo.errors import UserError
from amapo.files import write_atomically
from amapo.generation.questions import Question

MT_BENCH_TEMPERATURES = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
    "arena-hard-200": 0.0,
}
MT_BENCH_OTHER_TEMPERATURE = 0.7

# benchmark -> (temperature, None: MT-Bench's per category; max_new_tokens); top_p is 1.0 for all three
DEFAULTS: dict[str, tuple[float | None, int]] = {
    "alpaca-eval": (0.9, 4096),
    "mt-bench": (None, 1024),
    "arena-hard": (0.0, 4096),
}

# recorded setting -> the option that sets it: these must match for a rerun to continue a file
CHECKED = {
    "format": "--questions (another benchmark's format)",
    "model": "--model_name_or_path",
    "model_id": "--model_id",
    "chat_template_sha256": "--chat_template (the chat template's hash)",
    "temperature": "--temperature",
    "top_p": "--top_p",
    "max_new_tokens": "--max_new_tokens",
    "seed": "--seed",
    "sampler": "how tokens are drawn (amapo.seeds.SAMPLER)",
}
BEFORE_SAMPLER = "one torch generator per question (before issue 28)"  # what a settings file without one means


@dataclass(frozen=True)
class Sampling:
    temperature: float | None  # None: MT-Bench's temperature per category
    top_p: float
    max_new_tokens: int
    seed: int

    def temperature_of(self, question: Question) -> float:
        if self.temperature is not None:
            return self.temperature
        return MT_BENCH_TEMPERATURES.get(question.category or "", MT_BENCH_OTHER_TEMPERATURE)

    def seed_of(self, question: Question) -> int:
        """Question i samples from its own stream, seeded seed + i: the same answer in a resumed or whole run."""
        return self.seed + question.index


def resolve_sampling(
    benchmark: str, temperature: float | None, top_p: float, max_new_tokens: int | None, seed: int
) -> Sampling:
    default_temperature, default_tokens = DEFAULTS[benchmark]
    return Sampling(
        default_temperature if temperature is None else temperature,
        top_p,
        default_tokens if max_new_tokens is None else max_new_tokens,
        seed,
    )


def template_hash(template: Any) -> str:
    """sha256 of the chat template (a tokenizer may hold several named ones: all of them, as sorted JSON)."""
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_path(output: Path) -> Path:
    return output.with_name(output.name + ".settings.json")


def read_settings(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise UserError(
            f"cannot read the settings file {path} ({err}): delete it and its answers to start over"
        ) from None
    if not isinstance(values, dict):
        raise UserError(f"{path} is not a settings file (not a JSON object): delete it and its answers to start over")
    return values


def check_continuable(output: Path, answers: int, recorded: dict | None, current: dict) -> None:
    """``output``'s ``answers`` were made with the ``current`` settings, else a one-line refusal naming the
    differing ones and the ways out."""
    if answers == 0:
        return
    sidecar = settings_path(output)
    ways_out = f"give another --output, or delete {output} to start over"
    if recorded is None:
        raise UserError(f"{output} holds {answers} answers but no {sidecar.name} saying how they were made: {ways_out}")
    differing = [key for key in CHECKED if recorded.get(key) != current.get(key)]
    if differing:
        changes = "; ".join(
            f"{CHECKED[key]}: {show(current.get(key), key)} now, {show(recorded.get(key), key)} for them"
            for key in differing
        )
        raise UserError(
            f"{output} holds {answers} answers made with other settings ({sidecar.name}): {changes}. To continue "
            f"it, rerun with the recorded settings; or {ways_out}"
        )


def show(value: Any, key: str = "") -> str:
    if value is None:
        return BEFORE_SAMPLER if key == "sampler" else "none (the benchmark's default)"
    if isinstance(value, str) and len(value) == 64:  # a hash
        return value[:12]
    return str(value)


def write_settings(output: Path, settings: dict) -> None:
    write_atomically(settings_path(output), json.dumps(settings, indent=2) + "\n")
