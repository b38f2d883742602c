"""``amapo compare``'s options, what each of its runs measured, and ``runs.json`` (both, written and read)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from amapo.errors import UserError
from amapo.option_checks import check_method, check_number

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
    seeds: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 5],
        metadata={
            "help": "Seeds. For a seed every method trains on the same data order, so methods compare seed by "
            "seed; the intervals need at least 2, and narrow with more."
        },
    )
    confirm_seeds: list[int] = field(
        default_factory=list,
        metadata={
            "help": "Seeds of a confirmation stage, disjoint from --seeds: a claim is established only if it holds, "
            "corrected for the number of claims, in --seeds and again in these (see the report's method note)."
        },
    )
    recipe: str = field(default="builtin", metadata={"help": "Training recipe shared by all runs (path or name)."})
    workers: int = field(
        default=2,
        metadata={
            "help": "Runs trained at once, each in a process of its own with one thread (on 2 CPU cores, 2 "
            "workers train about 1.85x as fast as one run with 2 threads). 1: one run at a time, in this "
            "process, with torch's own thread count (on a GPU, give 1)."
        },
    )
    beta_sweep: list[float] = field(
        default_factory=list, metadata={"help": "Betas to sweep (sweep mode: each method x beta x seed)."}
    )
    output_dir: str = field(default="reports/compare", metadata={"help": "Report folder; runs go in runs/."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the report of an earlier comparison in output_dir (without it, such a folder is "
            "refused before anything trains)."
        },
    )
    max_steps: int = field(default=-1, metadata={"help": "Training budget per run in steps (-1: the recipe's)."})
    eval_steps: int = field(default=128, metadata={"help": "Evaluate every N steps (accuracy curves)."})
    eval_pairs: int = field(
        default=2048,
        metadata={
            "help": "Pairs scored per held-out set of the built-in task (pools of 8192; a recipe's own sets are "
            "scored whole). 2048 resolves about a 2-point accuracy difference at 5 seeds."
        },
    )
    analysis_set: str = field(
        default="in_distribution",
        metadata={"help": "Eval set for the gradient indicators and the accuracy curves (at the recipe's own size)."},
    )
    generate: bool = field(default=True, metadata={"help": "Sample answers and measure length and true reward."})
    generation_sets: list[str] = field(
        default_factory=lambda: ["in_distribution", "prompt_ood"], metadata={"help": "Eval sets to answer."}
    )
    max_generations: int = field(default=256, metadata={"help": "Prompts answered per set and run."})
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
            ("confirm_seeds", self.confirm_seeds or [0], "--confirm_seeds 4 5 6"),
        ):
            if not values:
                raise UserError(f"--{option} needs at least one value, e.g. {example}")
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            if twice:  # two runs would share a folder
                raise UserError(f"--{option} lists {', '.join(twice)} twice: give each once")
        shared = sorted(set(self.seeds) & set(self.confirm_seeds))
        if shared:  # a confirmation on the discovery's own runs confirms nothing
            raise UserError(f"--confirm_seeds must be disjoint from --seeds; both have {', '.join(map(str, shared))}")
        if self.confirm_seeds and self.beta_sweep:
            raise UserError("--confirm_seeds applies to the claims of a comparison, not to a --beta_sweep")
        for method in self.methods:
            check_method("methods", method)
        for beta in self.beta_sweep:
            check_number("beta_sweep", beta, "> 0")
        if len(set(self.beta_sweep)) != len(self.beta_sweep):
            raise UserError(f"--beta_sweep lists a beta twice: {' '.join(f'{b:g}' for b in self.beta_sweep)}")
        if self.max_steps != -1 and self.max_steps < 1:
            raise UserError(f"--max_steps must be -1 (the recipe's budget) or >= 1, got {self.max_steps}")
        for option in ("eval_steps", "eval_pairs", "max_generations", "max_new_tokens", "workers"):
            check_number(option, getattr(self, option), ">= 1")
        from amapo.evaluation.sets import check_named_sets  # (datasets: only once options are given)

        check_named_sets("eval_datasets", self.eval_datasets)


@dataclass
class RunResult:
    """What one (method, beta, seed) run measured."""

    method: str
    seed: int
    beta: float | None
    run_dir: str
    accuracy: dict[str, float]  # held-out set -> ranking accuracy of the final model
    ranked_right: dict[str, str]  # held-out set -> "0"/"1" per pair, in set order (the paired statistics)
    gradient: dict[str, float]  # indicators on the analysis set, with the run's own method
    generation: dict[str, float]  # "<set>/length", "<set>/true_reward": means over prompts
    per_prompt: dict[str, list[float]]  # the same, per prompt (the same prompts for every run)
    curve: dict[str, list[list[float]]]  # analysis set -> [[step, accuracy], ...]
    benchmarks: dict[str, dict[str, float]] = field(default_factory=dict)  # --eval_datasets set -> its numbers


RUNS_FILE = "runs.json"


def write_runs(path: Path, config: CompareConfig, base: dict, results: list[RunResult]) -> None:
    """``runs.json``: the options, the base model's scores and every run's measurements: all the report reads."""
    document = {"config": asdict(config), "base": base, "runs": [asdict(r) for r in results]}
    path.write_text(json.dumps(document, indent=1) + "\n")


def read_runs(path: Path) -> tuple[CompareConfig, dict, list[RunResult]]:
    document = json.loads(path.read_text())
    known = {f.name for f in fields(CompareConfig)}
    config = CompareConfig(**{k: v for k, v in document["config"].items() if k in known})
    return config, document["base"], [RunResult(**run) for run in document["runs"]]
