"""Did the run leave a working model? A check of what the run measured anyway, after training: the held-out ranking
accuracy before and after, and the training logs. A run that destroyed its model (issue 33: ``--learning_rate 1e6``
left every answer scored alike, gradient norm 0, accuracy 0, and ended with exit 0 and no word) now ends with one
warning line naming what happened and the likely cause, and ``results.json`` records the verdict.

The signals, each chosen so that it does not fire on a healthy run (checked on the built-in recipes, learning rates
1e-3 to 1e-2, methods amapo, dpo and simpo):

- **eval accuracy**: the ranking accuracy over all eval pairs together fell beyond what sampling noise explains.
  The same pairs are scored before and after, so the change is a paired difference; with only the two accuracies
  known, its variance (under "no change") is bounded by the share of pairs that can have flipped,
  d <= min(a + b, 2 - a - b, 1), over n pairs: d / n, summed over the sets. The drop must exceed ``NOISE_Z`` = 3 such
  standard errors (one-sided p < 0.0014 even at the bound), and ``MIN_DROP`` = 0.05 (so that a real but small drop
  on a very large eval set is left to the user's evaluation, not called a broken run). The sets are pooled, not
  tested one by one: a method may legitimately trade accuracy on one out-of-distribution set for another (the
  built-in task's response_ood fell 0.77 -> 0.59 at learning rate 3e-3 while mutual_ood rose 0.42 -> 0.59).
  Methods scored against a reference model have accuracy 0 before training (every pair a tie), so this signal
  cannot fire for them; the training signals below still can.
- **vanished gradient**: the gradient norm is 0 (below ``ZERO_GRAD``) at each of the last ``WINDOW`` training logs
  while the loss is not (above ``SOME_LOSS``): the loss no longer depends on the weights, the model's outputs are
  saturated. This is the signature of issue 33's run (loss ln 2, margins 0, accuracy 0 from step 2 on).
- **exploded loss**: the loss is above ``HUGE_LOSS`` = 1e4 at each of the last ``WINDOW`` logs. The preference
  losses grow like the reward margin against the pair's preference, and a healthy run stays below ~10 (AMaPO's
  loss rises with its adaptive margin, to 2.6-5.6 on the built-in recipes); 1e4 means log-prob differences of ~1e5
  nats. A loss merely "above ln 2" is not a signal: AMaPO's starts at ~1.5 and grows in a healthy run.

The training logs are ``trainer.state.log_history`` (the whole run's, also after a resume), the same on every
process; only the main process prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from amapo.run_files import ACCURACY, accuracy_by_set

NOISE_Z = 3.0
MIN_DROP = 0.05
WINDOW = 3  # training logs at the end of the run that must all show a collapse (one bad log is not a trend)
ZERO_GRAD = 1e-8
SOME_LOSS = 1e-2
HUGE_LOSS = 1e4
ADAM_SCALE = 0.1  # a learning rate at which Adam's steps are as large as typical weights


@dataclass
class Health:
    """The verdict: ``ok``, ``degraded`` (``reasons`` say why, with numbers), or ``unchecked`` (no eval sets and no
    training log to judge by)."""

    verdict: str
    reasons: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        return self.verdict == "degraded"

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "reasons": self.reasons, "checked": self.checked}

    def warning(self, learning_rate: float) -> str:
        """The one line a degraded run ends with. Above ``ADAM_SCALE`` "10-100x lower" would still be no learning
        rate at all (Adam moves each weight by about the learning rate per step), so the line gives the range
        recipes use instead."""
        if learning_rate >= ADAM_SCALE:
            advice = (
                "is far too high: Adam moves each weight by about that much per step; the paper's recipes use 3e-7 "
                "to 1e-6 for 7-8B models, the built-in task 1e-3"
            )
        else:
            low, high = learning_rate / 100, learning_rate / 10
            advice = f"is too high for this model: try 10-100x lower ({low:g} to {high:g})"
        return (
            f"warning: training degraded the model: {'; '.join(self.reasons)}. Likely cause: --learning_rate "
            f"{learning_rate:g} {advice}. The model was saved; results.json records this under health"
        )


def check_health(
    eval_before: dict[str, float],
    eval_after: dict[str, float],
    eval_sizes: dict[str, int],
    log_history: list[dict],
) -> Health:
    """The run's verdict from its evaluation before and after (``eval_sizes``: pairs per eval set) and its logs."""
    reasons, checked = [], []
    drop = accuracy_drop(accuracy_by_set(eval_before), accuracy_by_set(eval_after), eval_sizes)
    if drop is not None:
        checked.append("eval_accuracy")
        reasons += [drop] if drop else []
    logs = [log for log in log_history if "loss" in log and isinstance(log["loss"], int | float)]
    if logs:
        checked.append("training_logs")
        reasons += training_collapse(logs[-WINDOW:])
    verdict = "degraded" if reasons else ("ok" if checked else "unchecked")
    return Health(verdict, reasons, checked)


def accuracy_drop(before: dict[str, float], after: dict[str, float], sizes: dict[str, int]) -> str | None:
    """A sentence if the pooled ranking accuracy fell beyond noise (see the module docstring), "" if not, None if
    there is nothing to compare."""
    names = [name for name in after if name in before and sizes.get(name, 0) > 0]
    if not names:
        return None
    total = sum(sizes[name] for name in names)
    pooled = lambda acc: sum(acc[name] * sizes[name] for name in names) / total  # noqa: E731
    a, b = pooled(before), pooled(after)
    flipped = sum(sizes[n] * min(before[n] + after[n], 2 - before[n] - after[n], 1.0) for n in names)
    noise = math.sqrt(flipped) / total  # the standard error of b - a at its bound: sqrt(sum n_i d_i) / N
    if a - b < max(NOISE_Z * noise, MIN_DROP):
        return ""
    worst = max(names, key=lambda n: before[n] - after[n])
    where = f"on {names[0]}" if len(names) == 1 else f"over the {len(names)} eval sets (most on {worst}: " \
        f"{before[worst]:.3f} -> {after[worst]:.3f})"  # fmt: skip
    return (
        f"held-out ranking accuracy fell {a:.3f} -> {b:.3f} {where}, {total} pairs (a drop of {a - b:.3f}, noise "
        f"explains up to {NOISE_Z * noise:.3f})"
    )


def training_collapse(window: list[dict]) -> list[str]:
    """Sentences for a vanished gradient or an exploded loss over ``window`` (the last training logs)."""
    steps = f"the last {len(window)} training logs (to step {window[-1].get('step', '?')})"
    if len(window) == 1:
        steps = f"the last training log (step {window[-1].get('step', '?')})"
    losses = [log["loss"] for log in window]
    accuracy = [log[ACCURACY] for log in window if isinstance(log.get(ACCURACY), int | float)]
    grads = [log.get("grad_norm") for log in window]
    reasons = []
    if all(isinstance(g, int | float) and g <= ZERO_GRAD for g in grads) and min(losses) > SOME_LOSS:
        accuracy_text = f", ranking accuracy {max(accuracy):.2f}" if accuracy else ""
        reasons.append(
            f"the gradient norm was {max(grads):g} at {steps} while the loss stayed at {losses[-1]:.4g}"
            f"{accuracy_text}: the model's outputs no longer change with its weights"
        )
    if all(math.isfinite(loss) for loss in losses) and min(losses) > HUGE_LOSS:
        reasons.append(f"the training loss exploded to {losses[-1]:.3g} at {steps}")
    return reasons
