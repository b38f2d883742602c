"""Margin-based preference losses in the AMaPO paper's unified form; usable from any training loop.

from amapo.losses import PreferenceInputs, build_loss
loss_fn = build_loss("amapo", beta=2.0)
out = loss_fn(PreferenceInputs(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths))
out.loss.backward()
"""

from amapo.losses import amapo as _amapo  # noqa: F401  (registers the AMaPO family)
from amapo.losses import methods as _methods  # noqa: F401  (registers the baselines)
from amapo.losses.amapo import AMaPOLoss, AMaPOReleasedLoss, capped_exp_margin
from amapo.losses.base import LossOutput, Margin, PreferenceInputs, PreferenceLoss
from amapo.losses.methods import AlphaDPOLoss, CPOLoss, DPOLoss, FocalPOLoss, IPOLoss, ODPOLoss, SimPOLoss
from amapo.losses.registry import LossSpec, available_losses, build_loss, loss_spec, register_loss
from amapo.losses.stats import BatchStats, PoolGather, StepStatistics, all_gather_detached, batch_stats

__all__ = [
    "AMaPOLoss",
    "AMaPOReleasedLoss",
    "AlphaDPOLoss",
    "BatchStats",
    "CPOLoss",
    "DPOLoss",
    "FocalPOLoss",
    "IPOLoss",
    "LossOutput",
    "LossSpec",
    "Margin",
    "ODPOLoss",
    "PoolGather",
    "PreferenceInputs",
    "PreferenceLoss",
    "SimPOLoss",
    "StepStatistics",
    "all_gather_detached",
    "available_losses",
    "batch_stats",
    "build_loss",
    "capped_exp_margin",
    "loss_spec",
    "register_loss",
]
