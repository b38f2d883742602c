"""SimPO whose loss is NaN in training for any batch holding a chosen answer longer than 20 tokens: the trigger of
the non-finite-step tests. ``test_reliability`` patches it in; run as a program (``... tests/nan_on_long_answers.py
train ...``) it patches it in and runs ``amapo``, for runs in a launched process."""

import dataclasses
import sys

from amapo.losses.methods import SimPOLoss

forward = SimPOLoss.forward


def failing_forward(self, inputs):
    out = forward(self, inputs)
    if self.training and (inputs.chosen_lengths > 20).any():
        return dataclasses.replace(out, loss=out.loss * float("nan"))
    return out


if __name__ == "__main__":
    from amapo.cli import main

    SimPOLoss.forward = failing_forward
    sys.exit(main())
