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
"cannot tell at this size": the half-width says what difference this many seeds and items resolve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
AGREES, DISAGREES, CANNOT_TELL = "agrees", "disagrees", "cannot tell at this size"


@dataclass(frozen=True)
class PairedDifference:
    """a - b (or b - a for a lower-is-better metric, so positive always means "a is better")."""

    estimate: float
    low: float
    high: float
    per_seed: tuple[float, ...]  # the difference within each seed
    items: int | None  # held-out items per seed; None for a per-run metric
    seed_share: float = 1.0  # the seeds' share of the variance (per-item metrics; the rest is the items')

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

    @property
    def interval_text(self) -> str:
        if math.isinf(self.half_width):
            return f"{self.estimate:+.3f} (one seed: no interval)"
        return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def t_quantile(df: float) -> float:
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


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
        half = t_quantile(seeds - 1) * float(per_seed.std(ddof=1)) / math.sqrt(seeds)
        return PairedDifference(estimate, estimate - half, estimate + half, tuple(per_seed.tolist()), None)
    items = diff.shape[1]
    seed_term = float(per_seed.var(ddof=1)) / seeds if seeds > 1 else 0.0
    item_term = float(diff.mean(axis=0).var(ddof=1)) / items if items > 1 else 0.0
    variance = seed_term + item_term
    if variance == 0.0:  # every seed and item gives the same difference
        return PairedDifference(estimate, estimate, estimate, tuple(per_seed.tolist()), items, 0.0)
    dof_parts = (seed_term**2 / (seeds - 1) if seeds > 1 else 0.0) + (item_term**2 / (items - 1) if items > 1 else 0.0)
    dof = variance**2 / dof_parts
    half = t_quantile(dof) * math.sqrt(variance)
    share = seed_term / variance
    return PairedDifference(estimate, estimate - half, estimate + half, tuple(per_seed.tolist()), items, share)
