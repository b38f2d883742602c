"""Evaluation and analysis: ranking accuracy in and out of distribution, gradient dynamics, generations,
and the paper's comparison as a report (``amapo eval``, ``amapo analyze``, ``amapo compare``)."""

import importlib
from typing import Any

__all__ = ["PairScores", "compute_pair_logps", "score_with_loss"]


def __getattr__(name: str) -> Any:  # the scoring stack (torch) on first use: option modules here stay light
    if name in __all__:
        return getattr(importlib.import_module("amapo.evaluation.scoring"), name)
    raise AttributeError(f"module 'amapo.evaluation' has no attribute {name!r}")
