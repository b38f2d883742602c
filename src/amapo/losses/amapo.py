"""AMaPO: Adaptive Margin-attached Preference Optimization (AAAI 2026, arXiv 2511.09385).

Two forms ship, because the released trainer (github Shiroha-Offical/AMaPO, scripts/amapo_trainer.py)
differs from the paper's equations, and its code produced the paper's numbers:

=====================  ==========================================  ============================================
                       ``amapo`` (paper, Sec. 4)                   ``amapo-released`` (released trainer)
=====================  ==========================================  ============================================
score                  r = beta/|y_w| log pi_w - beta/|y_l| log pi_l   d = log pi_w/|y_w| - log pi_l/|y_l| = r/beta
statistics             mu_r, sigma_r of r over the batch           mu, sigma of d over the batch
difficulty             z = (mu_r - r) / sigma_r                    z = (mu - d) / sigma  (the same z)
exponent               gamma = max(z * mu_r, 0)                    z * mu  (= z * mu_r / beta: beta times smaller)
gate (margin > 0 iff)  gamma > 0, i.e. z * mu_r > 0                d < mu, i.e. r < mu_r
margin                 h = beta * exp(gamma) where gated, else 0   beta * exp(z * mu) where gated, else 0
loss                   -log sigmoid(r - sg[h])                     -log sigmoid(beta * d - sg[margin])
=====================  ==========================================  ============================================

When mu_r > 0 (most pairs ranked right, the usual case after SFT) both gates select the pairs below the batch
mean. When mu_r <= 0 they part: the paper's gamma = max(z * mu_r, 0) gives a margin to pairs *above* the mean
and none below it (taken literally, as implemented here), while the released gate still selects pairs below
the mean, whose margin beta * exp(z * mu) then lies in (0, beta].

Choices where the paper is open, shared by both forms:

* sigma is the unbiased standard deviation (``torch.std`` in the release);
* a one-pair batch, or a batch whose scores are all equal (sigma = 0), has no spread, so z = 0 for every
  pair: the margin is 0 and the loss is -log sigmoid(r). The release computes sigma = NaN (one pair) or 0
  there, but every d then equals mu, so its gate ``d < mu`` is false and its ``torch.where`` picks the zero
  margin too: the same finite loss;
* the exponent is capped where exp would overflow (``capped_exp_margin``), which never changes a gradient by
  more than e^-30;
* the statistics are taken over the batch that ``gather`` defines (``amapo.losses.stats``): by default this
  micro-batch; the release gathers every GPU's micro-batch (4 GPUs: pools of 4 x 2 = 8 pairs, or 4 x 1 for
  Llama-3-Base), which ``PoolGather`` (``--margin_pool_size``) reproduces on any number of GPUs.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from amapo.losses.base import Margin, PreferenceInputs, PreferenceLoss, mean_logps
from amapo.losses.registry import register_loss
from amapo.losses.stats import GatherFn, batch_stats, standardized_gap

EXP_CAP_FLOOR = 30.0


def capped_exp_margin(beta: float, exponent: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """beta * exp(exponent), finite for every finite input, with the gradient of the uncapped margin.

    The exponent is capped at c_i = max(30, log((|r_i| + 30) / beta)), so a capped margin still satisfies
    h_i >= |r_i| + 30 and z_i = r_i - h_i <= -30 before and after the cap: the gradient weight
    sigmoid(h_i - r_i) is 1 - O(e^-30) either way. Only the (huge) loss value of such a pair is capped.
    """
    cap = torch.log((scores.abs() + 30.0) / beta).clamp(min=EXP_CAP_FLOOR)
    return beta * torch.exp(torch.minimum(exponent, cap))


@register_loss("amapo", "-log sigmoid(r - sg[h(gamma)]), gamma = max((mu_r - r)/sigma_r * mu_r, 0), h = beta*e^gamma")
@register_loss("amapo-no-znorm", "AMaPO ablation: gamma = max((mu_r - r) * mu_r, 0)", znorm=False)
@register_loss("amapo-no-exp", "AMaPO ablation: h(gamma) = beta * gamma", exp_scaling=False)
@register_loss(
    "amapo-no-adaptive", "AMaPO ablation: h = beta * max((mu_r - r) * mu_r, 0)", znorm=False, exp_scaling=False
)
@register_loss("amapo-no-zero-margin", "AMaPO ablation: h = beta * e^gamma for every pair", zero_margin=False)
class AMaPOLoss(PreferenceLoss):
    """AMaPO as the paper writes it (Sec. 4, final objective), with its ablations as flags.

        r      = beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x)
        gamma  = max(((mu_r - r) / sigma_r) * mu_r, 0)          mu_r, sigma_r over the batch
        h      = beta * exp(gamma) if gamma > 0 else 0
        L      = -log sigmoid(r - sg[h])

    Ablations (paper, Table "ablation"): ``znorm=False`` drops the division by sigma_r; ``exp_scaling=False``
    uses h = beta * gamma; both False is "w/o adaptive"; ``zero_margin=False`` uses h = beta * exp(gamma) for
    every pair, so pairs ranked right keep a margin of at least beta. Default beta = 2.0 (the paper's
    recommended ~2; its released configs use 2.0 for Mistral and 3.0 for Llama-3).
    """

    OPTION_HELP: ClassVar[dict[str, str]] = {
        "znorm": "AMaPO: Z-normalize the margin (ablation: false).",
        "exp_scaling": "AMaPO: exponential scaling (ablation: false).",
        "zero_margin": "AMaPO: zero margin for pairs ranked right.",
    }

    length_normalized = True
    margin_from_pool_statistics = True

    def __init__(
        self,
        beta: float = 2.0,
        znorm: bool = True,
        exp_scaling: bool = True,
        zero_margin: bool = True,
        label_smoothing: float = 0.0,
        nll_weight: float = 0.0,
        gather: GatherFn | None = None,
    ) -> None:
        super().__init__(beta, label_smoothing, nll_weight, gather)
        self.znorm = bool(znorm)
        self.exp_scaling = bool(exp_scaling)
        self.zero_margin = bool(zero_margin)

    def batch_statistic(self, scores: torch.Tensor, inputs: PreferenceInputs) -> torch.Tensor:
        return scores.detach()  # mu_r, sigma_r are statistics of r itself

    def target_margin(self, scores: torch.Tensor, inputs: PreferenceInputs) -> Margin:
        stats = batch_stats(self.batch_statistic(scores, inputs), self.gather)
        difficulty = standardized_gap(scores, stats) if self.znorm else stats.mean - scores
        gamma = (difficulty * stats.mean).clamp(min=0)
        if self.exp_scaling:
            margin = capped_exp_margin(self.beta, gamma, scores)
        else:
            margin = self.beta * gamma
        if self.zero_margin:
            margin = torch.where(gamma > 0, margin, torch.zeros_like(margin))
        return Margin(values=margin, mean=stats.mean, std=stats.std, count=stats.count)

    def extra_repr(self) -> str:
        flags = f"znorm={self.znorm}, exp_scaling={self.exp_scaling}, zero_margin={self.zero_margin}"
        return f"{super().extra_repr()}, {flags}"


@register_loss("amapo-released", "-log sigmoid(beta*d - sg[beta*e^((mu-d)/sigma*mu) if d < mu else 0])")
class AMaPOReleasedLoss(PreferenceLoss):
    """AMaPO exactly as its released trainer computes it (``amapo_loss``, loss_type "sigmoid").

        d      = log pi(y_w|x)/|y_w| - log pi(y_l|x)/|y_l|        (no beta)
        mu, sigma = mean and unbiased std of the detached d over the batch (``gather``)
        margin = beta * exp(((mu - d) / sigma) * mu) if d < mu else 0   (stop-gradient)
        L      = -(1 - eps) log sigmoid(beta*d - margin) - eps log sigmoid(-(beta*d - margin))

    plus ``nll_weight`` (the release's ``sft_weight``), 0 by default like ``label_smoothing``. One-pair pools and
    sigma = 0 give margin 0, as in the release (its gate is false there); the one guard it lacks is the cap on
    the exponent before exp overflows.
    ``batch_mean`` / ``batch_std`` are reported in reward units (beta * mu, beta * sigma), like ``amapo``'s.
    """

    length_normalized = True
    margin_from_pool_statistics = True

    def __init__(
        self, beta: float = 2.0, label_smoothing: float = 0.0, nll_weight: float = 0.0, gather: GatherFn | None = None
    ) -> None:
        super().__init__(beta, label_smoothing, nll_weight, gather)

    def batch_statistic(self, scores: torch.Tensor, inputs: PreferenceInputs) -> torch.Tensor:
        """d = mean log pi(y_w) - mean log pi(y_l), recomputed from the inputs as the release does (no beta)."""
        d = mean_logps(inputs.chosen_logps, inputs.chosen_lengths) - mean_logps(
            inputs.rejected_logps, inputs.rejected_lengths
        )
        return d.detach()

    def target_margin(self, scores: torch.Tensor, inputs: PreferenceInputs) -> Margin:
        d = self.batch_statistic(scores, inputs)
        stats = batch_stats(d, self.gather)
        exponent = standardized_gap(d, stats) * stats.mean
        margin = capped_exp_margin(self.beta, exponent, scores)
        margin = torch.where(d < stats.mean, margin, torch.zeros_like(margin))
        return Margin(values=margin, mean=self.beta * stats.mean, std=self.beta * stats.std, count=stats.count)
