"""``amapo compare``'s options and what each of its runs measured."""

from __future__ import annotations

from dataclasses import dataclass, field

from amapo.errors import UserError
from amapo.evaluation.checks import check_method, check_number
from amapo.evaluation.sets import check_named_sets

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
    eval_datasets: list[str] = field(
        default_factory=list,
        metadata={
            "help": "More sets to score every trained model on, as `amapo eval --datasets` takes them: NAME=SOURCE"
            "[@SPLIT] (pairs, RM-Bench or scored-response sets), or the shorthands rm-bench and rm-robustness. "
            "Reported in their own table and beside the paper's numbers; loaded before the first run trains."
        },
    )

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
        check_named_sets("eval_datasets", self.eval_datasets)


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
    benchmarks: dict[str, dict[str, float]] = field(default_factory=dict)  # --eval_datasets set -> its numbers
