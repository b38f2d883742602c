"""amapo: offline preference optimization around AMaPO (Adaptive Margin-attached Preference Optimization).

The loss API is imported on first use, so ``import amapo`` (and ``amapo --help``) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("amapo.losses"), name)
    raise AttributeError(f"module 'amapo' has no attribute {name!r}")
