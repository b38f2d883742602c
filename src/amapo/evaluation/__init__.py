"""Evaluation and analysis: ranking accuracy in and out of distribution, gradient dynamics, generations,
and the paper's comparison as a report (``amapo eval``, ``amapo analyze``, ``amapo compare``)."""

from amapo.evaluation.scoring import PairLogps, PairScores, compute_pair_logps, score_with_loss

__all__ = ["PairLogps", "PairScores", "compute_pair_logps", "score_with_loss"]
