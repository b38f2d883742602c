"""The options of ``amapo generate``, declared once, with the checks that need nothing loaded (torch-free, so
``--help`` is quick)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from amapo.data.chat import is_jinja_text
from amapo.errors import UserError
from amapo.generation.questions import BENCHMARKS
from amapo.model.decodings import DECODINGS
from amapo.option_checks import check_number


@dataclass
class GenerateConfig:
    model_name_or_path: str = field(
        metadata={
            "help": "Model that answers: a local folder (e.g. an `amapo train` output), a Hub id, or "
            "builtin:tiny-llama."
        }
    )
    questions: str = field(
        metadata={
            "help": "Question file in its benchmark's published format: AlpacaEval's eval set (a JSON list of "
            "{instruction, ...}, e.g. alpaca_eval_gpt4_baseline.json), FastChat's MT-Bench question.jsonl, or "
            "arena-hard-auto's question.jsonl (v0.1 or v2.0)."
        }
    )
    benchmark: str | None = field(
        default=None,
        metadata={
            "help": "alpaca-eval, arena-hard or mt-bench. Default: told from the file's rows; when given, the "
            "file must be in its format."
        },
    )
    output: str | None = field(
        default=None,
        metadata={
            "help": "Answer file. Default: MODEL/eval/BENCHMARK/MODEL_ID.jsonl (model_outputs.json for AlpacaEval) "
            "for a local model, ./eval/BENCHMARK/... for a Hub id or builtin:tiny-llama. Existing answers in it are "
            "kept and skipped."
        },
    )
    model_id: str | None = field(
        default=None,
        metadata={
            "help": "The model's name in the answers (generator / model_id / model). Default: the model folder's name."
        },
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per answer (per turn). Default: 4096 for AlpacaEval (the AMaPO release's Llama-3 "
            "configs) and Arena-Hard (its gen_answer_config.yaml), 1024 for MT-Bench (FastChat's "
            "gen_model_answer.py); for builtin:tiny-llama, the answer length of its recipe (max_length - "
            "max_prompt_length)."
        },
    )
    temperature: float | None = field(
        default=None,
        metadata={
            "help": "Sampling temperature; below 1e-4 greedy. Default: 0.9 for AlpacaEval (the AMaPO release's "
            "Llama-3 configs; its Mistral ones use 0.7 Base, 0.5 Instruct), 0 for Arena-Hard (its "
            "gen_answer_config.yaml), FastChat's per-category temperatures for MT-Bench (writing/roleplay 0.7, "
            "stem/humanities 0.1, extraction/math/coding/reasoning 0, others 0.7)."
        },
    )
    top_p: float = field(
        default=1.0,
        metadata={
            "help": "Nucleus sampling: keep the most probable tokens up to this probability "
            "mass, in (0, 1]. 1.0 (the default of all three benchmarks) keeps all."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Questions answered together (left-padded)."})
    seed: int = field(
        default=0,
        metadata={
            "help": "Each token of question i (its 0-based row in the file) is drawn with a number that depends "
            "on seed + i, the turn and the token's position alone (a counter-based hash), so an answer does not "
            "depend on the batch, and a resumed run answers as an uninterrupted one."
        },
    )
    max_questions: int | None = field(
        default=None, metadata={"help": "Answer only the first N questions of the file (a trial run)."}
    )
    decoding: str = field(
        default="auto",
        metadata={
            "help": "KV cache: static (a static cache, the forward compiled on a GPU: seconds of start-up, then "
            "faster steps), dynamic, or auto (static on a GPU, dynamic on a CPU)."
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Jinja chat template (text, or a .jinja file) instead of the tokenizer's; needed for a "
            "model without one."
        },
    )

    def __post_init__(self) -> None:
        """Every option that can be checked alone, as a ``UserError`` naming it (before anything loads)."""
        if self.decoding not in DECODINGS:
            raise UserError(f"--decoding must be one of {', '.join(DECODINGS)}, got {self.decoding!r}")
        if self.benchmark is not None and self.benchmark not in BENCHMARKS:
            raise UserError(f"--benchmark must be one of {', '.join(BENCHMARKS)}, got {self.benchmark!r}")
        for option in ("max_new_tokens", "batch_size", "max_questions"):
            check_number(option, getattr(self, option), ">= 1")
        check_number("temperature", self.temperature, ">= 0")
        check_number("seed", self.seed, ">= 0")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise UserError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.model_id is not None and (not self.model_id.strip() or any(c in self.model_id for c in "/\\")):
            raise UserError(
                f"--model_id must be a name without / or \\ (it names the answer file), got {self.model_id!r}"
            )
        template = self.chat_template
        if template is not None and not is_jinja_text(template) and not Path(template).expanduser().is_file():
            raise UserError(
                f"--chat_template {template!r} is neither Jinja text (with {{{{ or {{%) nor an existing file"
            )
