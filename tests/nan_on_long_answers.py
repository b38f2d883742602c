"""``... tests/nan_on_long_answers.py train ...``: ``amapo`` whose SimPO loss is NaN in training for any batch holding a
chosen answer longer than 20 tokens (as ``test_reliability.nan_on_long_answers``), for runs in a launched process."""

import dataclasses
import sys

from amapo.losses.methods import SimPOLoss

forward = SimPOLoss.forward


def failing_forward(self, inputs):
    out = forward(self, inputs)
    if self.training and (inputs.chosen_lengths > 20).any():
        return dataclasses.replace(out, loss=out.loss * float("nan"))
    return out


SimPOLoss.forward = failing_forward

from amapo.cli import main  # noqa: E402

sys.exit(main())
