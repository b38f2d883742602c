"""Margin-based preference losses in the AMaPO paper's unified form; usable from any training loop.

from amapo.losses import PreferenceInputs, build_loss
loss_fn = build_loss("amapo", beta=2.0)
out = loss_fn(PreferenceInputs(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths))
out.loss.backward()
"""

import importlib as _importlib
import pkgutil as _pkgutil

from amapo.losses.amapo import AMaPOLoss, AMaPOReleasedLoss, capped_exp_margin
from amapo.losses.base import LossOutput, Margin, PreferenceInputs, PreferenceLoss
from amapo.losses.methods import AlphaDPOLoss, CPOLoss, DPOLoss, FocalPOLoss, IPOLoss, ODPOLoss, SimPOLoss
from amapo.losses.registry import LossSpec, available_losses, build_loss, loss_spec, register_loss
from amapo.losses.stats import BatchStats, PoolGather, StepStatistics, all_gather_detached, batch_stats

# Every module of this package registers its losses on import: a new loss (and its options) is one new file.
for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

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
