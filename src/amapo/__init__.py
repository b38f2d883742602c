"""amapo: offline preference optimization around AMaPO (Adaptive Margin-attached Preference Optimization)."""

from amapo.losses import (
    LossOutput,
    PreferenceInputs,
    PreferenceLoss,
    all_gather_detached,
    available_losses,
    build_loss,
)

__version__ = "0.1.0"

__all__ = [
    "LossOutput",
    "PreferenceInputs",
    "PreferenceLoss",
    "__version__",
    "all_gather_detached",
    "available_losses",
    "build_loss",
]
