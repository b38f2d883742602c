"""Paired differences between two methods of one ``amapo compare``, with a 95% interval and a verdict.

Every method of a comparison trains on the same data in the same order for a given seed, and is scored on the
same held-out pairs and prompts, so differences are taken pair by pair within a seed: the noise shared by both
methods (which pairs are hard, which order a seed drew) cancels.

Two shapes of measurement:

* **per item** (``[seeds, items]``: a pair ranked right or wrong, an answer's length or true reward). With
  D[s, i] = a[s, i] - b[s, i], the estimate is the mean of D, and its variance counts both sources of chance, the
  training seed and the held-out items, as a crossed two-way design:

      V = var_s(mean_i D[s, i]) / S + var_i(mean_s D[s, i]) / N

  (the moment form of Owen's pigeonhole bootstrap: A. B. Owen, "The pigeonhole bootstrap", Annals of Applied
  Statistics 1(2), 2007). It counts the seed-by-item interaction twice, so it errs on the wide side. The interval
  is mean ± t_{0.975, df} sqrt(V), with Welch-Satterthwaite degrees of freedom
  df = V^2 / ((v_s/S)^2 / (S-1) + (v_i/N)^2 / (N-1)): with few seeds and a seed term that dominates, the
  t quantile is that of S - 1 degrees of freedom. With one seed the interval covers the items only.
* **per run** (``[seeds]``: a run-level number such as a gradient indicator): the paired t-interval over seeds,
  mean ± t_{0.975, S-1} sd / sqrt(S); one seed gives no interval.

A claim "a beats b" **agrees** when the interval lies above 0, **disagrees** when it lies below, and otherwise
"cannot tell at this size": the half-width says what difference this many seeds and items resolve. Each difference
also has its two-sided p-value (the same t statistic and degrees of freedom: p < 0.05 exactly when the interval
excludes 0).

**Many claims.** A report tests many claims; at 95% each, one of 20 true nulls "agrees" by chance. ``holm``
adjusts the p-values of a report's claims for their number (Holm's step-down, S. Holm, "A simple sequentially
rejective multiple test procedure", Scandinavian Journal of Statistics 6(2), 1979). Chosen over Benjamini-Hochberg
because it controls the chance of any false verdict (not only their expected share) under any dependence between
the claims, which share runs and seeds here. **Confirmation**: a claim whose corrected verdict holds is tested
again on disjoint seeds (``amapo compare --confirm_seeds``), its p-values corrected among the claims carried
there; it is *established* only if it holds in both (``claim_status``). A claim that holds in one seed set and not
the other is *suggestive*: a rerun on another machine's arithmetic, in effect another draw of the experiment, turned
one such "agrees" into "cannot tell".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 1 - LEVEL
AGREES, DISAGREES, CANNOT_TELL = "agrees", "disagrees", "cannot tell at this size"
ESTABLISHED, ESTABLISHED_AGAINST = "established", "established against the paper"
SUGGESTIVE, SUGGESTIVE_AGAINST = "suggestive", "suggestive, against the paper"
UNTOLD = "cannot tell"


@dataclass(frozen=True)
class PairedDifference:
    """a - b (or b - a for a lower-is-better metric, so positive always means "a is better")."""

    estimate: float
    low: float
    high: float
    per_seed: tuple[float, ...]  # the difference within each seed
    items: int | None  # held-out items per seed; None for a per-run metric
    seed_share: float = 1.0  # the seeds' share of the variance (per-item metrics; the rest is the items')
    p_value: float = math.nan  # two-sided, of the t statistic behind the interval (nan: one seed, no test)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return AGREES
        if self.high < 0:
            return DISAGREES
        return CANNOT_TELL

    def verdict_at(self, p_value: float) -> str:
        """The verdict when the difference counts as resolved at ``p_value`` (e.g. Holm-adjusted) < ALPHA."""
        if not p_value < ALPHA:
            return CANNOT_TELL
        return AGREES if self.estimate > 0 else DISAGREES

    @property
    def interval_text(self) -> str:
        if math.isinf(self.half_width):
            return f"{self.estimate:+.3f} (one seed: no interval)"
        return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def t_quantile(df: float) -> float:
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def two_sided_p(estimate: float, standard_error: float, df: float) -> float:
    if standard_error == 0.0:
        return 1.0 if estimate == 0.0 else 0.0
    return float(2 * stats.t.sf(abs(estimate) / standard_error, df))


def paired_difference(a, b, higher_is_better: bool = True) -> PairedDifference:
    """The paired difference of ``a`` and ``b`` (both ``[seeds, items]`` or both ``[seeds]``; module docstring)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(
            f"paired measurements need equal [seeds] or [seeds, items] shapes, got {a.shape} and {b.shape}"
        )
    diff = a - b if higher_is_better else b - a
    seeds = diff.shape[0]
    per_seed = diff.mean(axis=1) if diff.ndim == 2 else diff
    estimate = float(diff.mean())
    if diff.ndim == 1:
        if seeds < 2:
            return PairedDifference(estimate, -math.inf, math.inf, tuple(per_seed.tolist()), None)
        error = float(per_seed.std(ddof=1)) / math.sqrt(seeds)
        half = t_quantile(seeds - 1) * error
        p = two_sided_p(estimate, error, seeds - 1)
        return PairedDifference(estimate, estimate - half, estimate + half, tuple(per_seed.tolist()), None, 1.0, p)
    items = diff.shape[1]
    seed_term = float(per_seed.var(ddof=1)) / seeds if seeds > 1 else 0.0
    item_term = float(diff.mean(axis=0).var(ddof=1)) / items if items > 1 else 0.0
    variance = seed_term + item_term
    if variance == 0.0:  # every seed and item gives the same difference
        p = two_sided_p(estimate, 0.0, 1)
        return PairedDifference(estimate, estimate, estimate, tuple(per_seed.tolist()), items, 0.0, p)
    dof_parts = (seed_term**2 / (seeds - 1) if seeds > 1 else 0.0) + (item_term**2 / (items - 1) if items > 1 else 0.0)
    dof = variance**2 / dof_parts
    half = t_quantile(dof) * math.sqrt(variance)
    share = seed_term / variance
    p = two_sided_p(estimate, math.sqrt(variance), dof)
    return PairedDifference(estimate, estimate - half, estimate + half, tuple(per_seed.tolist()), items, share, p)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (nan stays nan and does not count as a test):
    sorted ascending, p_(k) becomes max over j <= k of min(1, (m - j + 1) p_(j)), m the number of tests."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def claim_status(discovery: str, confirmation: str | None, *raw: str | None) -> str:
    """What a claim amounts to, from its corrected verdicts in the discovery seeds and (None: not tested there) the
    confirmation seeds, and its uncorrected verdicts (``raw``: discovery, confirmation): established only when both
    corrected verdicts hold the same way; suggestive when some verdict holds but not both; else cannot tell."""
    if confirmation is not None and discovery == confirmation == AGREES:
        return ESTABLISHED
    if confirmation is not None and discovery == confirmation == DISAGREES:
        return ESTABLISHED_AGAINST
    seen = [v for v in (discovery, confirmation, *raw) if v in (AGREES, DISAGREES)]
    if not seen:
        return UNTOLD
    return SUGGESTIVE if seen[0] == AGREES else SUGGESTIVE_AGAINST
