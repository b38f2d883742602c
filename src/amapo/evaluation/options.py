"""The options of ``amapo eval`` and ``amapo analyze``, declared once, with the checks that need nothing loaded.

Torch-free (the checks that read datasets' code import it only once options are given), so ``--help`` is quick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amapo.attention_names import check_attn_implementation
from amapo.builtin.recipe_options import BUILTIN_MODEL, builtin_model_options
from amapo.data.sources import parse_named_set
from amapo.data.truncation import TRUNCATION_MODES
from amapo.errors import UserError
from amapo.option_checks import check_method, check_number
from amapo.options_json import parse_json_mapping

BUILTIN_ANALYSIS_SET = "in_distribution"  # as `amapo compare` analyzes the built-in task
OVERWRITE_HELP = "Replace the results of an earlier run in output_dir (without it, such a folder is refused)."


@dataclass
class EvalConfig:
    model_name_or_path: str = field(metadata={"help": "Model to evaluate: an `amapo train` output folder or Hub id."})
    datasets: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Eval sets, each 'NAME=SOURCE' or 'NAME=SOURCE@SPLIT' (SOURCE: file, folder, Hub, builtin:), "
            "or a shorthand: 'rm-bench' (THU-KEG/RM-Bench), 'rm-robustness' (its four in-distribution and OOD sets). "
            "The format (pairs, RM-Bench, scored responses) is read from the columns, or named: "
            "'NAME=rm-bench:SOURCE', 'NAME=scored-responses:SOURCE', 'NAME=pairs:SOURCE'. "
            "Default: the eval sets of the `amapo train` run in model_name_or_path (its eval_split, named 'eval', "
            "and its eval_datasets)."
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
    column_mapping: str | None = field(
        default=None,
        metadata={"help": "JSON column mapping, as for training. Default: the training run's; '{}' for none."},
    )
    generate: bool = field(default=False, metadata={"help": "Also sample answers to each set's prompts."})
    max_generations: int = field(default=256, metadata={"help": "Prompts to answer per set."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens per generated answer."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where results go (default: MODEL/eval; ./tiny-llama/eval for the built-in)."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel: eager, sdpa, flex_attention, flash_attention_2 (default: transformers'); "
            "the batch layout follows it (shared_prompt on flex_attention, packed on flash-attention; on eager/sdpa "
            "shared_prompt or padded per batch, whichever costs less memory)."
        },
    )

    def __post_init__(self) -> None:
        """Every option that can be checked alone, as a ``UserError`` naming it (before anything loads)."""
        for option in ("batch_size", "max_generations", "max_new_tokens", "max_length", "max_prompt_length"):
            check_number(option, getattr(self, option), ">= 1")
        check_number("beta", self.beta, "> 0")
        check_number("temperature", self.temperature, ">= 0")
        check_attn_implementation(self.attn_implementation)
        if self.truncation_mode is not None and self.truncation_mode not in TRUNCATION_MODES:
            raise UserError(
                f"--truncation_mode must be one of {', '.join(TRUNCATION_MODES)}, got {self.truncation_mode!r}"
            )
        if self.chat_rendering is not None:
            from amapo.data.tokenization import check_rendering  # (datasets: only once options are given)

            check_rendering(self.chat_rendering)
        if self.method is not None:
            check_method("method", self.method)
        from amapo.evaluation.sets import MAPPING_EXAMPLE, check_named_sets

        parse_json_mapping("column_mapping", self.column_mapping, MAPPING_EXAMPLE)
        check_named_sets("datasets", self.datasets)


DEFAULT_METHODS = ["dpo", "simpo", "amapo", "amapo-released"]


@dataclass
class AnalyzeConfig:
    model_name_or_path: str = field(metadata={"help": "A checkpoint or `amapo train` output folder."})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Pairs to analyze: 'SOURCE', 'SOURCE@SPLIT' or 'NAME=SOURCE@SPLIT'. Needed, except for "
            f"{BUILTIN_MODEL}, whose default is its held-out {BUILTIN_ANALYSIS_SET} set (recipe builtin)."
        },
    )
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS), metadata={"help": "Methods to compare."})
    ref_model_name_or_path: str | None = field(default=None, metadata={"help": "Reference (default: initial policy)."})
    batch_size: int = field(default=32, metadata={"help": "Pairs per batch (AMaPO's statistics batch)."})
    max_length: int | None = field(default=None, metadata={"help": "Default: the training run's, else 1024."})
    max_prompt_length: int | None = field(default=None, metadata={"help": "Default: the training run's, else 512."})
    column_mapping: str | None = field(
        default=None,
        metadata={"help": "JSON column mapping, as for training. Default: the training run's; '{}' for none."},
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Default: MODEL/analysis; ./tiny-llama/analysis for the built-in model."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self) -> None:
        """Every option that can be checked alone, as a ``UserError`` naming it (before anything loads)."""
        if self.dataset is None and self.model_name_or_path == BUILTIN_MODEL:
            sets = builtin_model_options().get("eval_datasets", [])
            self.dataset = next(e for e in sets if parse_named_set(e)[0] == BUILTIN_ANALYSIS_SET)
        if self.dataset is None:  # as argparse says it of a required option
            raise UserError("the following arguments are required: --dataset (see `amapo analyze --help`)")
        if not self.methods:
            raise UserError(f"--methods needs at least one method, e.g. --methods {' '.join(DEFAULT_METHODS)}")
        for method in self.methods:
            check_method("methods", method)
        twice = sorted({m for m in self.methods if self.methods.count(m) > 1})
        if twice:
            raise UserError(f"--methods lists {', '.join(twice)} twice: give each method once")
        for option in ("batch_size", "max_length", "max_prompt_length"):
            check_number(option, getattr(self, option), ">= 1")
        from amapo.evaluation.sets import MAPPING_EXAMPLE

        parse_json_mapping("column_mapping", self.column_mapping, MAPPING_EXAMPLE)
        name, source, _ = parse_named_set(self.named_dataset)
        if not name or not source:
            raise UserError(f"--dataset must be SOURCE, SOURCE@SPLIT or NAME=SOURCE@SPLIT, got {self.dataset!r}")

    @property
    def named_dataset(self) -> str:
        return self.dataset if "=" in self.dataset else f"pairs={self.dataset}"
