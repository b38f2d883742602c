"""PNG figures of the paper's analyses, drawn with matplotlib's file-only backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_margin_histograms(margins: dict[str, np.ndarray], path: Path) -> Path:
    """Distribution of reward margins r = h_w - h_l per eval set; r > 0 is a pair ranked right."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in margins.items():
        ax.hist(values, bins=40, alpha=0.5, label=f"{name} (acc {np.mean(values > 0):.3f})")
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_xlabel("reward margin r = h_w - h_l")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_gradient_weights(points: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """The paper's gradient-dynamics view: each pair's gradient weight |dL/dr| against its score r, per method.

    Left of r = 0 pairs are ranked wrong (a method that underfits gives them little weight); right of it they
    are ranked right (a method that overfits keeps pulling them).
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (scores, weights) in points.items():
        # A cloud, not a curve: adaptive margins give pairs of equal score different weights.
        ax.scatter(scores, weights, s=6, alpha=0.6, label=name)
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_xlabel("score r (implicit reward margin)")
    ax.set_ylabel("gradient weight |dL/dr|")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_accuracy_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Ranking accuracy over training steps: (steps, mean, spread) per method, spread shaded."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (steps, mean, spread) in curves.items():
        ax.plot(steps, mean, label=name, linewidth=1.2)
        ax.fill_between(steps, mean - spread, mean + spread, alpha=0.15)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("ranking accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_sweep(values: list[float], means: dict[str, list[float]], spreads: dict[str, list[float]], path: Path) -> Path:
    """Accuracy against beta per eval set (the paper's inverted-U claim)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, mean in means.items():
        ax.errorbar(values, mean, yerr=spreads[name], marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("beta")
    ax.set_ylabel("ranking accuracy")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
