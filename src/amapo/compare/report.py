"""The comparison report: Markdown tables shaped like the paper's, figures, and claim by claim whether the
small-scale result agrees with the paper, disagrees, or cannot tell at this size, from paired 95% intervals
(``amapo.compare.statistics``). Every number comes from the runs (``runs.json``)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amapo.compare.config import CompareConfig, RunResult
from amapo.compare.statistics import CANNOT_TELL, PairedDifference, claim_status, holm, paired_difference
from amapo.evaluation.plots import plot_accuracy_curves, plot_gradient_weights, plot_sweep

SETS = ("in_distribution", "prompt_ood", "response_ood", "mutual_ood")
REPORT_FILE = "report.md"

# The paper's ranking numbers (AMaPO, AAAI 2026: main results; ../shared/paper/AMaPO-summary.md), in percent, written
# with the paper's decimals: (what, setting, (set, metric), decimals, {method: value}).
PAPER_NUMBERS = (
    ("RM-Bench average", "Llama-3-8B-Base", ("rm_bench", "accuracy"), 1, {"amapo": 58.6, "simpo": 56.9, "dpo": 54.6}),
    ("RM-Bench hard", "Llama-3-8B-Base", ("rm_bench", "rm_bench/hard"), 1, {"amapo": 25.4, "simpo": 23.3, "dpo": 15.0}),
    ("response-OOD accuracy", "Mistral-7B-Base", ("response_ood", "accuracy"), 2,
     {"amapo": 83.62, "simpo": 76.08, "dpo": 68.41}),
    ("mutual-OOD accuracy", "Mistral-7B-Instruct", ("mutual_ood", "accuracy"), 2,
     {"amapo": 90.91, "simpo": 85.64, "dpo": 72.89}),
)  # fmt: skip
GRADIENT_COLUMNS = {  # indicator (RunResult.gradient) -> its heading
    "grad_weight/correct": "weight on pairs ranked right",
    "grad_weight/incorrect": "weight on pairs ranked wrong",
    "gradient/overfitting": "overfitting",
    "gradient/underfitting": "underfitting",
}
BENCHMARK_COLUMNS = ("accuracy", "rm_bench/easy", "rm_bench/normal", "rm_bench/hard", "accuracy/all_pairs",
                     "kendall_tau")  # fmt: skip


def tag_of(run: RunResult) -> str:
    return run.method if run.beta is None else f"{run.method}-beta{run.beta:g}"


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean, spread = mean_spread(values)
    return f"{mean:.3f} ± {spread:.3f}"


def percent_text(values: list[float]) -> str:
    mean, spread = mean_spread(values)
    return f"{100 * mean:.1f} ± {100 * spread:.1f}"


def by_tag(results: list[RunResult]) -> dict[str, list[RunResult]]:
    groups: dict[str, list[RunResult]] = defaultdict(list)
    for run in results:
        groups[tag_of(run)].append(run)
    return dict(groups)


def measurements(run: RunResult, section: str) -> dict[str, float]:
    """One kind of a run's measurements: ``accuracy``, ``gradient`` or ``generation``, or ``benchmarks/NAME`` (its
    numbers on the ``--eval_datasets`` set NAME; none if it has no such set)."""
    kind, _, name = section.partition("/")
    return run.benchmarks.get(name, {}) if kind == "benchmarks" else getattr(run, section)


def column(runs: list[RunResult], section: str, key: str) -> list[float]:
    """``key`` of ``section`` (``measurements``) in each run that measured it."""
    return [measurements(r, section)[key] for r in runs if key in measurements(r, section)]


def per_item(run: RunResult, section: str, key: str) -> np.ndarray | None:
    """One run's measurement item by item (pairs ranked right, or answers' lengths / true rewards), if kept."""
    if section == "accuracy" and key in run.ranked_right:
        return np.frombuffer(run.ranked_right[key].encode(), dtype=np.uint8) - ord("0")
    if section == "generation" and key in run.per_prompt:
        return np.asarray(run.per_prompt[key], dtype=float)
    return None


def paired(
    a_runs: list[RunResult], b_runs: list[RunResult], section: str, key: str, higher_is_better: bool = True
) -> PairedDifference | None:
    """The paired difference of two groups of runs on one metric, over the seeds both have (None if none):
    item by item where the runs kept their items, else run by run."""
    a_by_seed, b_by_seed = {r.seed: r for r in a_runs}, {r.seed: r for r in b_runs}
    seeds = [s for s in sorted(a_by_seed) if s in b_by_seed and key in measurements(a_by_seed[s], section)
             and key in measurements(b_by_seed[s], section)]  # fmt: skip
    if not seeds:
        return None
    a_paired, b_paired = [a_by_seed[s] for s in seeds], [b_by_seed[s] for s in seeds]
    items = [per_item(run, section, key) for run in a_paired + b_paired]
    if all(x is not None for x in items) and len({x.shape for x in items}) == 1:  # one shape in every run
        a, b = np.stack(items[: len(seeds)]), np.stack(items[len(seeds) :])
    else:
        a, b = np.array(column(a_paired, section, key)), np.array(column(b_paired, section, key))
    return paired_difference(a, b, higher_is_better)


@dataclass(frozen=True)
class Claim:
    """A statement of the paper, checked on this run: method ``a`` beats ``b`` on a metric."""

    text: str
    a: str
    b: str
    section: str
    key: str
    higher_is_better: bool = True

    def difference(self, groups: dict[str, list[RunResult]]) -> PairedDifference | None:
        if self.a not in groups or self.b not in groups:
            return None
        return paired(groups[self.a], groups[self.b], self.section, self.key, self.higher_is_better)


PAPER_CLAIMS = (
    Claim("AMaPO ranks held-out pairs better than SimPO (in distribution)", "amapo", "simpo", "accuracy",
          "in_distribution"),
    Claim("AMaPO ranks held-out pairs better than DPO (in distribution)", "amapo", "dpo", "accuracy",
          "in_distribution"),
    Claim("AMaPO generalizes better than SimPO to new responses (response-OOD)", "amapo", "simpo", "accuracy",
          "response_ood"),
    Claim("AMaPO generalizes better than SimPO under mutual OOD", "amapo", "simpo", "accuracy", "mutual_ood"),
    Claim("AMaPO spends less gradient on pairs already ranked right than SimPO (less overfitting)", "amapo", "simpo",
          "gradient", "gradient/overfitting", higher_is_better=False),
    Claim("AMaPO spends less gradient on pairs already ranked right than DPO (less overfitting)", "amapo", "dpo",
          "gradient", "gradient/overfitting", higher_is_better=False),
    Claim("AMaPO corrects pairs ranked wrong more strongly than SimPO (less underfitting)", "amapo", "simpo",
          "gradient", "gradient/underfitting", higher_is_better=False),
    Claim("AMaPO corrects pairs ranked wrong more strongly than DPO (less underfitting)", "amapo", "dpo",
          "gradient", "gradient/underfitting", higher_is_better=False),
    Claim("AMaPO's answers are shorter than SimPO's", "amapo", "simpo", "generation", "in_distribution/length",
          higher_is_better=False),
    Claim("AMaPO's answers have a higher true reward than SimPO's", "amapo", "simpo", "generation",
          "in_distribution/true_reward"),
    *(Claim(f"Removing {what} lowers ranking accuracy (in distribution)", "amapo", ablation, "accuracy",
            "in_distribution")
      for ablation, what in (
          ("amapo-no-znorm", "Z-normalization"),
          ("amapo-no-exp", "exponential scaling"),
          ("amapo-no-adaptive", "the adaptive margin (Z-norm and exp)"),
          ("amapo-no-zero-margin", "the zero margin for pairs ranked right"),
      )),
)  # fmt: skip


def table_row(name: str, cells: list[str]) -> str:
    """A Markdown table row: the row's name, then its cells."""
    return f"| {name} | " + " | ".join(cells) + " |"


def table_head(name: str, headings: list[str]) -> list[str]:
    return [table_row(name, headings), "|---" * (len(headings) + 1) + "|"]


def mean_rows(named_groups: Iterable[tuple[str, list[RunResult]]], section: str, keys: list[str]) -> list[str]:
    """A row per (name, runs): the runs' mean ± spread of each ``key`` of ``section``."""
    return [table_row(name, [fmt(column(runs, section, k)) for k in keys]) for name, runs in named_groups]


def sizes_text(sizes: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sizes.items())


def accuracy_table(groups: dict[str, list[RunResult]], sets: list[str], base: dict) -> list[str]:
    lines = table_head("method", sets)
    if base.get("accuracy"):  # the initial policy ranked by mean log-prob (the reward of SimPO / AMaPO)
        cells = [f"{base['accuracy'][s]:.3f}" if s in base["accuracy"] else "-" for s in sets]
        lines.append(table_row("base model (mean log-prob)", cells))
    return lines + mean_rows(groups.items(), "accuracy", sets)


def benchmark_tables(groups: dict[str, list[RunResult]], names: list[str]) -> list[str]:
    """One table per ``--eval_datasets`` set: each method's numbers on it (mean ± spread over seeds)."""
    runs = [r for group in groups.values() for r in group]
    lines = []
    for name in names:
        section = f"benchmarks/{name}"
        keys = [k for k in BENCHMARK_COLUMNS if column(runs, section, k)]
        lines += [f"### {name}", "", *table_head("method", keys), *mean_rows(groups.items(), section, keys), ""]
    return lines


def where_measured(where: str, key: str, runs: list[RunResult]) -> tuple[str, str, str] | None:
    """Where these runs measured the paper's number ``key`` on ``where``, as (section, key there, the words that name
    it), or None: RM-Bench from an ``--eval_datasets`` set in its format, another set from the ``--eval_datasets``
    set of that name, else from the recipe's."""
    if where == "rm_bench":
        in_its_format = sorted({n for r in runs for n, m in r.benchmarks.items() if "rm_bench/hard" in m})
        if not in_its_format:
            return None
        where = in_its_format[0]
    if any(where in r.benchmarks for r in runs):
        return f"benchmarks/{where}", key, f"`--eval_datasets` set `{where}`"
    if any(where in r.accuracy for r in runs):
        return "accuracy", where, f"the recipe's set `{where}`"
    return None


def paper_number_lines(config: CompareConfig, groups: dict[str, list[RunResult]]) -> list[str]:
    """The paper's RM-Bench and OOD numbers beside ours, for each of them this comparison measured
    (``where_measured``)."""
    runs = [r for group in groups.values() for r in group]
    lines = []
    for what, setting, (where, key), decimals, paper in PAPER_NUMBERS:
        found = where_measured(where, key, runs)
        if found is None:
            continue
        section, key_there, source = found
        ours = {m: values for m in paper if m in groups and (values := column(groups[m], section, key_there))}
        if not ours:
            continue
        theirs = ", ".join(f"{m} {v:.{decimals}f}" for m, v in paper.items())
        here = ", ".join(f"{m} {percent_text(v)}" for m, v in ours.items())
        order = ""
        if {"amapo", "simpo"} <= set(ours):  # pair by pair on the recipe's sets, run by run on --eval_datasets sets
            diff = paired(groups["amapo"], groups["simpo"], section, key_there)
            over = f"{len(diff.per_seed)} seeds" + (f" x {diff.items} pairs" if diff.items else "")
            order = (f"; AMaPO above SimPO as in the paper (uncorrected, the discovery seeds): {diff.verdict} "
                     f"(amapo - simpo {diff.interval_text}, {over})")  # fmt: skip
        lines.append(f"- {what}: paper ({setting}) {theirs}; here ({source}) {here}{order}.")
    if lines:
        lines.append(
            f"- These paper numbers come from 7-8B models trained on UltraFeedback; ours come from the models we could "
            f"train here (recipe `{config.recipe}`), so only the direction of a difference compares, not its size."
        )
    return lines


def curves_by_tag(groups: dict[str, list[RunResult]], eval_set: str):
    curves = {}
    for tag, runs in groups.items():
        series = [np.asarray(r.curve[eval_set]) for r in runs if eval_set in r.curve]
        if not series:
            continue
        length = min(len(s) for s in series)
        stacked = np.stack([s[:length] for s in series])  # [seeds, points, (step, accuracy)]
        spread = stacked[:, :, 1].std(axis=0, ddof=1) if len(series) > 1 else np.zeros(length)
        curves[tag] = (stacked[0, :, 0], stacked[:, :, 1].mean(axis=0), spread)
    return curves


def sweep_section(config: CompareConfig, results: list[RunResult], output_dir: Path, sets: list[str]) -> list[str]:
    lines = ["## Beta sweep", ""]
    betas = sorted(config.beta_sweep)
    for method in config.methods:
        by_beta = {beta: [r for r in results if r.method == method and r.beta == beta] for beta in betas}
        lines += [f"### {method}", "", *table_head("beta", sets)]
        lines += mean_rows(((f"{beta:g}", runs) for beta, runs in by_beta.items()), "accuracy", sets)
        means: dict[str, list[float]] = {s: [] for s in sets}
        spreads: dict[str, list[float]] = {s: [] for s in sets}
        for s in sets:
            for runs in by_beta.values():
                mean, spread = mean_spread(column(runs, "accuracy", s))
                means[s].append(mean)
                spreads[s].append(spread)
        plot_sweep(betas, means, spreads, output_dir / f"beta_sweep_{method}.png")
        lines += ["", f"![beta sweep](beta_sweep_{method}.png)", ""]
        lines += [f"- {s}: {inverted_u_verdict(betas, means[s], by_beta, s)}" for s in sets]
        lines.append("")
    return lines


def inverted_u_verdict(betas: list[float], means: list[float], by_beta: dict[float, list[RunResult]], key: str) -> str:
    """The paper's claim: accuracy peaks at an interior beta and is lower at both ends. Present when the peak beats
    each end by a paired interval above 0 (the same seeds and pairs at every beta), else it cannot tell."""
    if len(betas) < 3:
        return "needs at least 3 betas to test the inverted-U claim"
    top = int(np.argmax(means))
    peak, ends = betas[top], (betas[0], betas[-1])
    where = f"peak at beta {peak:g} ({means[top]:.3f})"
    if top in (0, len(betas) - 1):
        return f"no inverted U: {where}, at the end of the range"
    diffs = [paired(by_beta[peak], by_beta[end], "accuracy", key) for end in ends]
    if None in diffs:
        return f"cannot tell: {where}, and the betas share no seed"
    said = ", ".join(f"beta {peak:g} - beta {end:g} {diff.interval_text}"
                     for end, diff in zip(ends, diffs, strict=True))  # fmt: skip
    if all(diff.low > 0 for diff in diffs):
        return f"inverted U present: {where}; {said}"
    return f"inverted U cannot be told at this size: {where}; {said}"


INTERVALS = (
    "Each claim compares two methods seed by seed: for a seed both trained on the same data in the same order and "
    "are scored on the same held-out pairs and prompts. For a per-pair or per-prompt metric the difference is "
    "taken item by item and its 95% interval counts both the seeds and the held-out items (two-way variance "
    "var(seed means)/S + var(item means)/N, after Owen's pigeonhole bootstrap, with a Student-t quantile at "
    "Welch-Satterthwaite degrees of freedom); for a per-run metric (the gradient indicators) it is the paired "
    "t-interval over seeds. **agrees**: the difference lies on the paper's side of 0; **disagrees**: on the other "
    "side; **cannot tell at this size**: it contains 0, and its half-width is the difference this size resolves "
    "(`--seeds`, `--eval_pairs`, `--max_generations` to narrow it; the share of the variance from seeds says "
    "which helps more). Raw: the interval alone. Corrected: its two-sided p-value adjusted by Holm's step-down for "
    "the number of claims tested in the table (it controls the chance of any false verdict, whatever the "
    "dependence between claims that share runs); it is this verdict that counts."
)
CONFIRMATION = (
    "**Confirmation.** The claims whose corrected verdict holds are tested again on the confirmation seeds "
    "(`--confirm_seeds`, disjoint from the discovery's), corrected for the number carried there. **established**: "
    "the corrected verdict holds in both seed sets; **suggestive**: a verdict holds somewhere (raw or corrected, "
    "discovery or confirmation) but not in both; **cannot tell**: in neither."
)
NO_CONFIRMATION = "No confirmation seeds (`--confirm_seeds`): no claim can be established here, only suggested."
ONE_SEED = (
    "With one seed the intervals cover the held-out items only, not the training randomness: give `--seeds` at least "
    "2 for a verdict on the methods rather than on this one training order."
)
CLAIM_HEADINGS = ["claim (a vs b)", "metric", "a - b, 95% interval", "over", "p (Holm)", "verdict: raw / corrected"]
CONFIRMATION_HEADINGS = ["confirmation: a - b, 95% interval", "p (Holm)", "verdict"]


def claims_table(discovery: dict[str, list[RunResult]], confirmation: dict[str, list[RunResult]] | None) -> list[str]:
    """The paper's claims on these runs: the discovery seeds' difference, raw and Holm-corrected verdicts; with
    ``confirmation`` (the ``--confirm_seeds`` runs), the claims that hold tested again there, and each claim's status
    (``statistics.claim_status``)."""
    tested = [(claim, diff) for claim in PAPER_CLAIMS if (diff := claim.difference(discovery)) is not None]
    if not tested:
        return ["- (none of the paper's pairwise claims involve these methods)"]
    adjusted = holm([diff.p_value for _, diff in tested])
    corrected = [diff.verdict_at(p) for (_, diff), p in zip(tested, adjusted, strict=True)]
    again: dict[int, PairedDifference | None] = {}
    if confirmation is not None:
        again = {i: claim.difference(confirmation) for i, (claim, _) in enumerate(tested)}
    carried = [i for i, verdict in enumerate(corrected) if verdict != CANNOT_TELL and again.get(i) is not None]
    again_adjusted = dict(zip(carried, holm([again[i].p_value for i in carried]), strict=True))
    headings = CLAIM_HEADINGS + (CONFIRMATION_HEADINGS if confirmation is not None else []) + ["status"]
    lines = table_head(headings[0], headings[1:])
    for i, (claim, diff) in enumerate(tested):
        sign = "" if claim.higher_is_better else " (lower is better: b - a)"
        cells = [f"{claim.key}{sign}", diff.interval_text, over_text(diff), p_text(diff.p_value, adjusted[i]),
                 f"{diff.verdict} / **{corrected[i]}**"]  # fmt: skip
        other = again.get(i)
        confirmed = other.verdict_at(again_adjusted[i]) if i in again_adjusted else None
        if confirmation is not None:
            cells += confirmation_cells(other, again_adjusted.get(i), confirmed)
        status = claim_status(corrected[i], confirmed, diff.verdict, other.verdict if other is not None else None)
        lines.append(table_row(claim.text, [*cells, f"**{status}**"]))
    return lines


def over_text(diff: PairedDifference) -> str:
    """What a claim's difference is taken over: seeds, and held-out items with the seeds' share of the variance."""
    over = f"{len(diff.per_seed)} seeds"
    if diff.items:
        over += f" x {diff.items} items ({100 * diff.seed_share:.0f}% of the variance from seeds)"
    return over


def confirmation_cells(other: PairedDifference | None, adjusted: float | None, confirmed: str | None) -> list[str]:
    """A claim's confirmation cells: its difference there (``other``), and, if carried, the Holm-adjusted p-value
    and corrected verdict."""
    if confirmed is not None:
        return [other.interval_text, p_text(other.p_value, adjusted), f"**{confirmed}**"]
    if other is None:
        return ["-", "-", "no runs"]
    return [other.interval_text, "-", "not carried (not resolved in discovery)"]


def p_text(raw: float, adjusted: float) -> str:
    if math.isnan(raw):
        return "-"
    return f"{raw:.3g} ({adjusted:.3g})"


def method_note(config: CompareConfig) -> str:
    seeds = ", ".join(map(str, config.seeds))
    if config.confirm_seeds:
        seeds += f" (discovery) and {', '.join(map(str, config.confirm_seeds))} (confirmation)"
    budget = f"{config.max_steps} steps" if config.max_steps > 0 else f"the recipe's budget ({config.recipe})"
    swept = " except beta (swept)" if config.beta_sweep else ""
    return (
        f"Recipe `{config.recipe}`, methods {', '.join(config.methods)}, seeds {seeds}, {budget} per run; every "
        f"method with its own paper defaults for its loss options{swept}. Values are mean ± sample standard "
        "deviation over seeds. All numbers come from `runs.json`."
    )


def measured_sections(config: CompareConfig, results: list[RunResult], base: dict, sets: list[str]) -> list[str]:
    """The tables of what the runs measured: ranking accuracy, gradient dynamics, generation, benchmark sets."""
    groups = by_tag(results)
    pairs = {name: len(bits) for r in results for name, bits in r.ranked_right.items()}
    lines = [
        "## Ranking accuracy (implicit reward of each method, held-out pairs)",
        "",
        f"Pairs per set: {sizes_text(pairs) or 'none'}.",
        "",
        *accuracy_table(groups, sets, base),
        "",
        f"## Gradient dynamics (on `{config.analysis_set}`, each method's own loss, final model)",
        "",
        "Per-pair weight |dL/dr|; overfitting = share of gradient on pairs ranked right, underfitting = mean "
        "(1 - weight) on pairs ranked wrong. Lower is better for both.",
        "",
        *table_head("method", list(GRADIENT_COLUMNS.values())),
        *mean_rows(groups.items(), "gradient", list(GRADIENT_COLUMNS)),
        "",
    ]
    generation_keys = sorted({k for r in results for k in r.generation})
    if generation_keys:
        answered = sizes_text({key.split("/")[0]: len(v) for r in results for key, v in r.per_prompt.items()})
        lines += [
            f"## Generation (greedy answers to held-out prompts: {answered}; at most {config.max_new_tokens} tokens)",
            "",
            *table_head("method", generation_keys),
            *mean_rows(groups.items(), "generation", generation_keys),
            "",
        ]
    benchmark_names = list(dict.fromkeys(n for r in results for n in r.benchmarks))
    if benchmark_names:
        lines += ["## Benchmark sets (`--eval_datasets`, each method's implicit reward, final model)", ""]
        lines += benchmark_tables(groups, benchmark_names)
    return lines


def against_the_paper(config: CompareConfig, results: list[RunResult]) -> list[str]:
    """The paper's claims tested on the discovery seeds (and the confirmation seeds), and its numbers beside ours."""
    discovery = by_tag([r for r in results if r.seed in config.seeds])
    confirmation = by_tag([r for r in results if r.seed in config.confirm_seeds]) if config.confirm_seeds else None
    note = CONFIRMATION if confirmation is not None else NO_CONFIRMATION
    one_seed = [ONE_SEED, ""] if len(config.seeds) == 1 else []
    return ["## Against the paper", "", INTERVALS, "", note, "", *one_seed, *claims_table(discovery, confirmation), "",
            *paper_number_lines(config, discovery), ""]  # fmt: skip


def figures_section(config: CompareConfig, results: list[RunResult], points, output_dir: Path) -> list[str]:
    """Accuracy over training steps and gradient weight against score, drawn into ``output_dir``."""
    figures = []
    curves = curves_by_tag(by_tag(results), config.analysis_set)
    if curves:
        plot_accuracy_curves(
            curves, output_dir / "accuracy_over_steps.png", f"ranking accuracy on {config.analysis_set} (recipe size)"
        )
        figures.append("![ranking accuracy over training steps](accuracy_over_steps.png)")
    if points:
        plot_gradient_weights(points, output_dir / "gradient_weights.png")
        figures.append("![gradient weight against score](gradient_weights.png)")
    return ["## Figures", "", *figures, ""] if figures else []


def write_report(
    config: CompareConfig, results: list[RunResult], base: dict, points, output_dir: Path, preamble: str = ""
) -> Path:
    """``report.md`` (and its figures) in ``output_dir``; ``preamble``: lines put under the title (how it was made)."""
    sets = [s for s in SETS if any(s in r.accuracy for r in results)] or sorted(
        {k for r in results for k in r.accuracy}
    )
    lines = ["# amapo compare", "", *([preamble, ""] if preamble else []), method_note(config), ""]
    lines += measured_sections(config, results, base, sets)
    if config.beta_sweep:
        lines += sweep_section(config, results, output_dir, sets)
    else:
        lines += against_the_paper(config, results)
    lines += figures_section(config, results, points, output_dir)
    path = output_dir / REPORT_FILE
    path.write_text("\n".join(lines))
    return path
