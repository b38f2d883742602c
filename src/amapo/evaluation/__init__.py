"""Evaluation and analysis: ranking accuracy in and out of distribution, gradient dynamics, generations,
and the paper's comparison as a report (``amapo eval``, ``amapo analyze``, ``amapo compare``)."""

from amapo.evaluation.scoring import PairScores, compute_pair_logps, score_with_loss

__all__ = ["PairScores", "compute_pair_logps", "score_with_loss"]
