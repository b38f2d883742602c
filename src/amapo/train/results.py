"""What ``run_training`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from amapo.train.health import Health


@dataclass
class TrainResult:
    output_dir: Path
    train_metrics: dict[str, float]
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    health: Health | None = None  # did the run leave a working model (``amapo.train.health``)
