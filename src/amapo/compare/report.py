"""The comparison report: Markdown tables shaped like the paper's, figures, and claim by claim whether the
small-scale result agrees with the paper, disagrees, or cannot tell at this size, from paired 95% intervals
(``amapo.compare.statistics``). Every number comes from the runs (``runs.json``)."""

from __future__ import annotations

import math
from collections import defaultdict
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


def by_tag(results: list[RunResult]) -> dict[str, list[RunResult]]:
    groups: dict[str, list[RunResult]] = defaultdict(list)
    for run in results:
        groups[tag_of(run)].append(run)
    return dict(groups)


def column(runs: list[RunResult], section: str, key: str) -> list[float]:
    return [getattr(r, section)[key] for r in runs if key in getattr(r, section)]


def per_item(run: RunResult, section: str, key: str) -> np.ndarray | None:
    """One run's measurement item by item (pairs ranked right, or answers' lengths / true rewards), if kept."""
    if section == "accuracy" and key in run.ranked_right:
        return np.frombuffer(run.ranked_right[key].encode(), dtype=np.uint8) - ord("0")
    if section == "generation" and key in run.per_prompt:
        return np.asarray(run.per_prompt[key], dtype=float)
    return None


def paired(a_runs: list[RunResult], b_runs: list[RunResult], section: str, key: str, higher_is_better: bool = True):
    """The paired difference of two groups of runs on one metric, over the seeds both have (None if none):
    item by item where the runs kept their items, else run by run."""
    a_by_seed, b_by_seed = {r.seed: r for r in a_runs}, {r.seed: r for r in b_runs}
    seeds = [s for s in sorted(a_by_seed) if s in b_by_seed and key in getattr(a_by_seed[s], section)
             and key in getattr(b_by_seed[s], section)]  # fmt: skip
    if not seeds:
        return None
    items = [(per_item(a_by_seed[s], section, key), per_item(b_by_seed[s], section, key)) for s in seeds]
    if (
        all(a is not None and b is not None and a.shape == b.shape for a, b in items)
        and len({a.shape for a, _ in items}) == 1
    ):
        a, b = np.stack([a for a, _ in items]), np.stack([b for _, b in items])
    else:
        a = np.array([getattr(a_by_seed[s], section)[key] for s in seeds])
        b = np.array([getattr(b_by_seed[s], section)[key] for s in seeds])
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


def paper_claims() -> list[Claim]:
    claims = [
        Claim(
            "AMaPO ranks held-out pairs better than SimPO (in distribution)",
            "amapo",
            "simpo",
            "accuracy",
            "in_distribution",
        ),
        Claim(
            "AMaPO ranks held-out pairs better than DPO (in distribution)",
            "amapo",
            "dpo",
            "accuracy",
            "in_distribution",
        ),
        Claim(
            "AMaPO generalizes better than SimPO to new responses (response-OOD)",
            "amapo",
            "simpo",
            "accuracy",
            "response_ood",
        ),
        Claim("AMaPO generalizes better than SimPO under mutual OOD", "amapo", "simpo", "accuracy", "mutual_ood"),
        Claim(
            "AMaPO spends less gradient on pairs already ranked right than SimPO (less overfitting)",
            "amapo",
            "simpo",
            "gradient",
            "gradient/overfitting",
            higher_is_better=False,
        ),
        Claim(
            "AMaPO spends less gradient on pairs already ranked right than DPO (less overfitting)",
            "amapo",
            "dpo",
            "gradient",
            "gradient/overfitting",
            higher_is_better=False,
        ),
        Claim(
            "AMaPO corrects pairs ranked wrong more strongly than SimPO (less underfitting)",
            "amapo",
            "simpo",
            "gradient",
            "gradient/underfitting",
            higher_is_better=False,
        ),
        Claim(
            "AMaPO corrects pairs ranked wrong more strongly than DPO (less underfitting)",
            "amapo",
            "dpo",
            "gradient",
            "gradient/underfitting",
            higher_is_better=False,
        ),
        Claim(
            "AMaPO's answers are shorter than SimPO's",
            "amapo",
            "simpo",
            "generation",
            "in_distribution/length",
            higher_is_better=False,
        ),
        Claim(
            "AMaPO's answers have a higher true reward than SimPO's",
            "amapo",
            "simpo",
            "generation",
            "in_distribution/true_reward",
        ),
    ]
    for ablation, what in (
        ("amapo-no-znorm", "Z-normalization"),
        ("amapo-no-exp", "exponential scaling"),
        ("amapo-no-adaptive", "the adaptive margin (Z-norm and exp)"),
        ("amapo-no-zero-margin", "the zero margin for pairs ranked right"),
    ):
        claims.append(
            Claim(
                f"Removing {what} lowers ranking accuracy (in distribution)",
                "amapo",
                ablation,
                "accuracy",
                "in_distribution",
            )
        )
    return claims


def accuracy_table(groups: dict[str, list[RunResult]], sets: list[str], base: dict) -> list[str]:
    lines = ["| method | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    if base.get("accuracy"):  # the initial policy ranked by mean log-prob (the reward of SimPO / AMaPO)
        cells = [f"{base['accuracy'][s]:.3f}" if s in base["accuracy"] else "-" for s in sets]
        lines.append("| base model (mean log-prob) | " + " | ".join(cells) + " |")
    for tag, runs in groups.items():
        lines.append(f"| {tag} | " + " | ".join(fmt(column(runs, "accuracy", s)) for s in sets) + " |")
    return lines


def gradient_table(groups: dict[str, list[RunResult]]) -> list[str]:
    keys = ["grad_weight/correct", "grad_weight/incorrect", "gradient/overfitting", "gradient/underfitting"]
    lines = [
        "| method | weight on pairs ranked right | weight on pairs ranked wrong | overfitting | underfitting |",
        "|---|---|---|---|---|",
    ]
    for tag, runs in groups.items():
        lines.append(f"| {tag} | " + " | ".join(fmt(column(runs, "gradient", k)) for k in keys) + " |")
    return lines


def generation_table(groups: dict[str, list[RunResult]], keys: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for tag, runs in groups.items():
        lines.append(f"| {tag} | " + " | ".join(fmt(column(runs, "generation", k)) for k in keys) + " |")
    return lines


def benchmark_values(runs: list[RunResult], name: str, key: str) -> list[float]:
    return [r.benchmarks[name][key] for r in runs if key in r.benchmarks.get(name, {})]


def benchmark_tables(groups: dict[str, list[RunResult]], names: list[str]) -> list[str]:
    """One table per ``--eval_datasets`` set: each method's numbers on it (mean ± spread over seeds)."""
    lines = []
    for name in names:
        runs = [r for group in groups.values() for r in group]
        keys = [k for k in BENCHMARK_COLUMNS if benchmark_values(runs, name, k)]
        lines += [f"### {name}", "", "| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for tag, group in groups.items():
            lines.append(f"| {tag} | " + " | ".join(fmt(benchmark_values(group, name, k)) for k in keys) + " |")
        lines.append("")
    return lines


def paper_number_lines(config: CompareConfig, groups: dict[str, list[RunResult]]) -> list[str]:
    """The paper's RM-Bench and OOD numbers beside ours, for each of them this comparison measured: RM-Bench from an
    ``--eval_datasets`` set in its format, OOD from the ``--eval_datasets`` set of that name, else the recipe's."""
    runs = [r for group in groups.values() for r in group]
    rm_bench_sets = sorted({n for r in runs for n, m in r.benchmarks.items() if "rm_bench/hard" in m})
    lines = []
    for what, setting, (where, key), decimals, paper in PAPER_NUMBERS:
        if where == "rm_bench":
            if not rm_bench_sets:
                continue
            name, read, source = rm_bench_sets[0], benchmark_values, f"`--eval_datasets` set `{rm_bench_sets[0]}`"
        elif any(where in r.benchmarks for r in runs):
            name, read, source = where, benchmark_values, f"`--eval_datasets` set `{where}`"
        elif any(where in r.accuracy for r in runs):
            name, source = where, f"the recipe's set `{where}`"
            read = lambda group, set_name, _key: column(group, "accuracy", set_name)  # noqa: E731
        else:
            continue
        ours = {m: read(groups[m], name, key) for m in paper if m in groups}
        ours = {m: v for m, v in ours.items() if v}
        if not ours:
            continue
        theirs = ", ".join(f"{m} {v:.{decimals}f}" for m, v in paper.items())
        here = ", ".join(f"{m} {100 * mean_spread(v)[0]:.1f} ± {100 * mean_spread(v)[1]:.1f}" for m, v in ours.items())
        order = ""
        if {"amapo", "simpo"} <= set(ours):
            if read is benchmark_values:  # a number per run: the paired t-interval over seeds
                a, b = ({r.seed: r.benchmarks[name][key] for r in groups[m] if key in r.benchmarks.get(name, {})}
                        for m in ("amapo", "simpo"))  # fmt: skip
                both = sorted(set(a) & set(b))
                diff, over = paired_difference([a[s] for s in both], [b[s] for s in both]), f"{len(both)} seeds"
            else:  # the recipe's set: pair by pair, as the claims above
                diff = paired(groups["amapo"], groups["simpo"], "accuracy", name)
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
        runs = [r for r in results if r.method == method]
        lines += [f"### {method}", "", "| beta | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
        means, spreads = defaultdict(list), defaultdict(list)
        for beta in betas:
            at_beta = [r for r in runs if r.beta == beta]
            lines.append(f"| {beta:g} | " + " | ".join(fmt(column(at_beta, "accuracy", s)) for s in sets) + " |")
            for s in sets:
                m, sd = mean_spread(column(at_beta, "accuracy", s))
                means[s].append(m)
                spreads[s].append(sd)
        plot_sweep(betas, means, spreads, output_dir / f"beta_sweep_{method}.png")
        lines += ["", f"![beta sweep](beta_sweep_{method}.png)", ""]
        by_beta = {beta: [r for r in runs if r.beta == beta] for beta in betas}
        for s in sets:
            lines.append(f"- {s}: {inverted_u_verdict(betas, means[s], by_beta, s)}")
        lines.append("")
    return lines


def inverted_u_verdict(betas: list[float], means: list[float], by_beta: dict[float, list[RunResult]], key: str) -> str:
    """The paper's claim: accuracy peaks at an interior beta and is lower at both ends. Present when the peak beats
    each end by a paired interval above 0 (the same seeds and pairs at every beta), else it cannot tell."""
    if len(betas) < 3:
        return "needs at least 3 betas to test the inverted-U claim"
    peak = int(np.argmax(means))
    where = f"peak at beta {betas[peak]:g} ({means[peak]:.3f})"
    if peak in (0, len(betas) - 1):
        return f"no inverted U: {where}, at the end of the range"
    ends = [paired(by_beta[betas[peak]], by_beta[betas[end]], "accuracy", key) for end in (0, len(betas) - 1)]
    if any(diff is None for diff in ends):
        return f"cannot tell: {where}, and the betas share no seed"
    said = ", ".join(f"beta {betas[peak]:g} - beta {betas[end]:g} {diff.interval_text}"
                     for end, diff in zip((0, len(betas) - 1), ends, strict=True))  # fmt: skip
    if all(diff.low > 0 for diff in ends):
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


def claims_table(discovery: dict[str, list[RunResult]], confirmation: dict[str, list[RunResult]] | None) -> list[str]:
    """The paper's claims on these runs: the discovery seeds' difference, raw and Holm-corrected verdicts; with
    ``confirmation`` (the ``--confirm_seeds`` runs), the claims that hold tested again there, and each claim's status
    (``statistics.claim_status``)."""
    tested = [(claim, diff) for claim in paper_claims() if (diff := claim.difference(discovery)) is not None]
    if not tested:
        return ["- (none of the paper's pairwise claims involve these methods)"]
    adjusted = holm([diff.p_value for _, diff in tested])
    corrected = [diff.verdict_at(p) for (_, diff), p in zip(tested, adjusted, strict=True)]
    again: dict[int, PairedDifference | None] = {}
    if confirmation is not None:
        again = {i: claim.difference(confirmation) for i, (claim, _) in enumerate(tested)}
    carried = [i for i, verdict in enumerate(corrected) if verdict != CANNOT_TELL and again.get(i) is not None]
    again_adjusted = dict(zip(carried, holm([again[i].p_value for i in carried]), strict=True))
    header = ["claim (a vs b)", "metric", "a - b, 95% interval", "over", "p (Holm)", "verdict: raw / corrected"]
    if confirmation is not None:
        header += ["confirmation: a - b, 95% interval", "p (Holm)", "verdict"]
    header.append("status")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (claim, diff) in enumerate(tested):
        sign = "" if claim.higher_is_better else " (lower is better: b - a)"
        over = f"{len(diff.per_seed)} seeds"
        if diff.items:
            over += f" x {diff.items} items ({100 * diff.seed_share:.0f}% of the variance from seeds)"
        cells = [claim.text, f"{claim.key}{sign}", diff.interval_text, over, p_text(diff.p_value, adjusted[i]),
                 f"{diff.verdict} / **{corrected[i]}**"]  # fmt: skip
        confirmed, other = None, again.get(i)
        if confirmation is not None:
            if i in again_adjusted:
                confirmed = other.verdict_at(again_adjusted[i])
                cells += [other.interval_text, p_text(other.p_value, again_adjusted[i]), f"**{confirmed}**"]
            else:
                why = "not carried (not resolved in discovery)" if other is not None else "no runs"
                cells += [other.interval_text if other is not None else "-", "-", why]
        status = claim_status(corrected[i], confirmed, diff.verdict, other.verdict if other is not None else None)
        lines.append("| " + " | ".join(cells) + f" | **{status}** |")
    return lines


def p_text(raw: float, adjusted: float) -> str:
    if math.isnan(raw):
        return "-"
    return f"{raw:.3g} ({adjusted:.3g})"


def write_report(
    config: CompareConfig, results: list[RunResult], base: dict, points, output_dir: Path, preamble: str = ""
) -> Path:
    """``report.md`` (and its figures) in ``output_dir``; ``preamble``: lines put under the title (how it was made)."""
    groups = by_tag(results)
    sets = [s for s in SETS if any(s in r.accuracy for r in results)] or sorted(
        {k for r in results for k in r.accuracy}
    )
    seeds = ", ".join(map(str, config.seeds))
    if config.confirm_seeds:
        seeds += f" (discovery) and {', '.join(map(str, config.confirm_seeds))} (confirmation)"
    budget = f"{config.max_steps} steps" if config.max_steps > 0 else f"the recipe's budget ({config.recipe})"
    pairs = {name: len(bits) for r in results for name, bits in r.ranked_right.items()}
    sizes = ", ".join(f"{name} {n}" for name, n in pairs.items())
    prompts = {key.split("/")[0]: len(v) for r in results for key, v in r.per_prompt.items()}
    lines = [
        "# amapo compare",
        "",
        *([preamble, ""] if preamble else []),
        f"Recipe `{config.recipe}`, methods {', '.join(config.methods)}, seeds {seeds}, {budget} per run; every "
        "method with its own paper defaults for its loss options"
        + (" except beta (swept)" if config.beta_sweep else "")
        + ". Values are mean ± sample standard deviation over seeds. All numbers come from `runs.json`.",
        "",
        "## Ranking accuracy (implicit reward of each method, held-out pairs)",
        "",
        f"Pairs per set: {sizes or 'none'}.",
        "",
        *accuracy_table(groups, sets, base),
        "",
        f"## Gradient dynamics (on `{config.analysis_set}`, each method's own loss, final model)",
        "",
        "Per-pair weight |dL/dr|; overfitting = share of gradient on pairs ranked right, underfitting = mean "
        "(1 - weight) on pairs ranked wrong. Lower is better for both.",
        "",
        *gradient_table(groups),
        "",
    ]
    generation_keys = sorted({k for r in results for k in r.generation})
    if generation_keys:
        answered = ", ".join(f"{name} {n}" for name, n in prompts.items())
        lines += [
            f"## Generation (greedy answers to held-out prompts: {answered}; at most {config.max_new_tokens} tokens)",
            "",
            *generation_table(groups, generation_keys),
            "",
        ]
    benchmark_names = list(dict.fromkeys(n for r in results for n in r.benchmarks))
    if benchmark_names:
        lines += ["## Benchmark sets (`--eval_datasets`, each method's implicit reward, final model)", ""]
        lines += benchmark_tables(groups, benchmark_names)
    if config.beta_sweep:
        lines += sweep_section(config, results, output_dir, sets)
    else:
        one_seed = (
            ["With one seed the intervals cover the held-out items only, not the training randomness: give `--seeds` "
             "at least 2 for a verdict on the methods rather than on this one training order.", ""]
            if len(config.seeds) == 1 else []
        )  # fmt: skip
        discovery = by_tag([r for r in results if r.seed in config.seeds])
        confirmation = by_tag([r for r in results if r.seed in config.confirm_seeds]) if config.confirm_seeds else None
        note = (
            [CONFIRMATION, ""]
            if confirmation is not None
            else ["No confirmation seeds (`--confirm_seeds`): no claim can be established here, only suggested.", ""]
        )
        lines += ["## Against the paper", "", INTERVALS, "", *note, *one_seed, *claims_table(discovery, confirmation),
                  ""]  # fmt: skip
        lines += paper_number_lines(config, discovery)
        lines.append("")
    figures = []
    curves = curves_by_tag(groups, config.analysis_set)
    if curves:
        plot_accuracy_curves(
            curves, output_dir / "accuracy_over_steps.png", f"ranking accuracy on {config.analysis_set} (recipe size)"
        )
        figures.append("![ranking accuracy over training steps](accuracy_over_steps.png)")
    if points:
        plot_gradient_weights(points, output_dir / "gradient_weights.png")
        figures.append("![gradient weight against score](gradient_weights.png)")
    if figures:
        lines += ["## Figures", "", *figures, ""]
    path = output_dir / REPORT_FILE
    path.write_text("\n".join(lines))
    return path
