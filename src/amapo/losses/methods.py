"""The baselines of the AMaPO paper, each in the unified form L = link(r - gamma) + Lambda (see ``base``).

Defaults are each paper's (or its released code's) settings; where a paper leaves a detail open, the
choice is stated in the docstring and tested.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from amapo.losses.base import Margin, PreferenceInputs, PreferenceLoss, mean_logps
from amapo.losses.registry import register_loss
from amapo.losses.stats import BatchStats, GatherFn, batch_stats, standardized_gap


@register_loss("dpo", "-log sigmoid(beta*log(pi_w/ref_w) - beta*log(pi_l/ref_l))")
class DPOLoss(PreferenceLoss):
    """DPO (Rafailov et al. 2023, arXiv 2305.18290, Eq. 7).

    h = beta * log(pi(y|x) / pi_ref(y|x)) with summed log-probs, gamma = 0, sigmoid link.
    ``label_smoothing`` > 0 gives conservative DPO (cDPO). In the AMaPO paper's reading the reference
    log-ratio beta * log(pi_ref(y_w)/pi_ref(y_l)) is DPO's margin gamma; see ``base`` for why amapo folds it
    into h instead (same loss, same dL/dr).
    """

    needs_reference = True

    def __init__(
        self, beta: float = 0.1, label_smoothing: float = 0.0, nll_weight: float = 0.0, gather: GatherFn | None = None
    ) -> None:
        super().__init__(beta, label_smoothing, nll_weight, gather)


@register_loss("ipo", "(log(pi_w/ref_w)/|y_w| - log(pi_l/ref_l)/|y_l| - 1/(2*beta))^2")
class IPOLoss(PreferenceLoss):
    """IPO (Azar et al. 2023, arXiv 2310.12036, Eq. 17), beta playing the paper's tau.

    h = log(pi(y|x) / pi_ref(y|x)) / |y| (no beta), gamma = 1 / (2 beta), link z^2. The per-token average is
    not in the paper; it is what TRL does, confirmed by IPO's authors (TRL #1265, #1677).
    """

    needs_reference = True
    length_normalized = True

    def __init__(self, beta: float = 0.1, nll_weight: float = 0.0, gather: GatherFn | None = None) -> None:
        super().__init__(beta, 0.0, nll_weight, gather)

    def response_reward(
        self, logps: torch.Tensor, lengths: torch.Tensor, ref_logps: torch.Tensor | None
    ) -> torch.Tensor:
        return mean_logps(logps, lengths) - mean_logps(ref_logps, lengths)

    def target_margin(self, scores: torch.Tensor, inputs: PreferenceInputs) -> Margin:
        return Margin(values=torch.full_like(scores, 1.0 / (2.0 * self.beta)))

    def link(self, z: torch.Tensor) -> torch.Tensor:
        return z.square()


@register_loss("cpo", "-log sigmoid(beta*log pi_w - beta*log pi_l) - nll_weight*log pi_w/|y_w|")
class CPOLoss(PreferenceLoss):
    """CPO (Xu et al. 2024, arXiv 2401.08417, Eq. 3 plus its NLL term), reference-free.

    h = beta * log pi(y|x) with summed log-probs, gamma = 0, sigmoid link, Lambda = nll_weight * NLL(y_w).
    Defaults are TRL's CPOTrainer's (beta 0.1, cpo_alpha 1.0).
    """

    def __init__(
        self, beta: float = 0.1, label_smoothing: float = 0.0, nll_weight: float = 1.0, gather: GatherFn | None = None
    ) -> None:
        super().__init__(beta, label_smoothing, nll_weight, gather)


@register_loss("simpo", "-log sigmoid(beta/|y_w| log pi_w - beta/|y_l| log pi_l - beta*gamma_beta_ratio)")
class SimPOLoss(PreferenceLoss):
    """SimPO (Meng et al. 2024, arXiv 2405.14734, Eq. 6), reference-free.

    h = beta / |y| * log pi(y|x), gamma = beta * gamma_beta_ratio, sigmoid link.
    Scaling: amapo exposes the SimPO repository's ``gamma_beta_ratio``; TRL's CPOTrainer takes the absolute
    ``simpo_gamma`` = beta * gamma_beta_ratio. Defaults: beta 2.0, gamma/beta 0.5 (SimPO's Llama-3-Base setting).
    """

    OPTION_HELP: ClassVar[dict[str, str]] = {
        "gamma_beta_ratio": "SimPO / alpha-DPO target margin / beta.",
    }

    length_normalized = True

    def __init__(
        self,
        beta: float = 2.0,
        gamma_beta_ratio: float = 0.5,
        label_smoothing: float = 0.0,
        nll_weight: float = 0.0,
        gather: GatherFn | None = None,
    ) -> None:
        super().__init__(beta, label_smoothing, nll_weight, gather)
        self.gamma_beta_ratio = float(gamma_beta_ratio)

    def target_margin(self, scores: torch.Tensor, inputs: PreferenceInputs) -> Margin:
        return Margin(values=torch.full_like(scores, self.beta * self.gamma_beta_ratio))


@register_loss("odpo", "-log sigmoid(beta*log(pi_w/ref_w) - beta*log(pi_l/ref_l) - alpha*log(offset))")
class ODPOLoss(PreferenceLoss):
    """ODPO (Amini et al. 2024, arXiv 2402.10571, Eq. 9 with the log offset of its released code).

    h as DPO, gamma = alpha * f(offset) with the per-pair ``offsets`` taken from a dataset column (e.g. the
    score difference s_w - s_l); f = log (paper default, needs offset > 0) or identity.
    A non-positive offset under f = log is an error naming the pair, never a silent NaN.
    """

    OPTION_HELP: ClassVar[dict[str, str]] = {
        "alpha": "ODPO offset scale / alpha-DPO alpha.",
        "offset_transform": "ODPO offset transform: log or identity.",
    }

    needs_reference = True
    needs_offsets = True

    def __init__(
        self,
        beta: float = 0.1,
        alpha: float = 1.0,
        offset_transform: str = "log",
        label_smoothing: float = 0.0,
        nll_weight: float = 0.0,
        gather: GatherFn | None = None,
    ) -> None:
        super().__init__(beta, label_smoothing, nll_weight, gather)
        if offset_transform not in ("log", "identity"):
            raise ValueError(f"offset_transform must be 'log' or 'identity', got {offset_transform!r}")
        self.alpha = float(alpha)
        self.offset_transform = offset_transform

    def target_margin(self, scores: torch.Tensor, inputs: PreferenceInputs) -> Margin:
        offsets = inputs.offsets
        bad = ~torch.isfinite(offsets) | ((offsets <= 0) if self.offset_transform == "log" else False)
        if bad.any():
            i = int(bad.nonzero()[0])
            need = "finite and > 0 (offset_transform='log')" if self.offset_transform == "log" else "finite"
            raise ValueError(f"ODPO offset of pair {i} is {offsets[i].item()}; offsets must be {need}")
        transformed = offsets.log() if self.offset_transform == "log" else offsets
        return Margin(values=self.alpha * transformed)


@register_loss("focalpo", "-sigmoid(z)^focal_gamma * log sigmoid(z), z = beta*log(pi_w/ref_w) - beta*log(pi_l/ref_l)")
class FocalPOLoss(PreferenceLoss):
    """FocalPO (Liu et al. 2025, arXiv 2501.06645): DPO's loss scaled by p^gamma, p = sigmoid(z).

    h as DPO, gamma = 0, link -p^focal_gamma * log p. Unlike vision's focal loss (1 - p)^gamma, the factor
    p^gamma down-weights pairs ranked wrong (p small) and keeps the weight of pairs ranked right: the
    opposite direction to AMaPO. The modulating factor is differentiated (not detached), as in focal loss.
    Computed as -exp(g * log p) * log p from log p = log sigmoid(z), which is stable for any z.
    No code was released (the repository holds only a README): the p^gamma form follows the paper's abstract
    (a focal-style factor that down-weights misranked pairs), and the default focal_gamma = 0.05 is ours to
    confirm against the paper's appendix; set it explicitly when reproducing FocalPO's numbers.
    """

    OPTION_HELP: ClassVar[dict[str, str]] = {
        "focal_gamma": "FocalPO exponent.",
    }

    needs_reference = True

    def __init__(
        self, beta: float = 0.1, focal_gamma: float = 0.05, nll_weight: float = 0.0, gather: GatherFn | None = None
    ) -> None:
        super().__init__(beta, 0.0, nll_weight, gather)
        if not focal_gamma >= 0:
            raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
        self.focal_gamma = float(focal_gamma)

    def link(self, z: torch.Tensor) -> torch.Tensor:
        log_p = F.logsigmoid(z)
        return -torch.exp(self.focal_gamma * log_p) * log_p


@register_loss(
    "alpha-dpo",
    "-log sigmoid(r - beta*(gamma_beta_ratio + alpha*(M - mu_t)/sigma_t)), M = policy minus reference mean log-ratio",
)
class AlphaDPOLoss(PreferenceLoss):
    """alpha-DPO (Wu et al. 2024, arXiv 2410.10148), exact to its released trainer (junkangwu/alpha-DPO).

    h = beta / |y| * log pi(y|x) (SimPO's reward; ``ln: true`` in every shipped config), and
        M = (mean log pi(y_w) - mean log pi(y_l)) - (mean log pi_ref(y_w) - mean log pi_ref(y_l)),
        mu_t = momentum * mu_{t-1} + (1 - momentum) * mean(M),  sigma_t likewise with std(M), both from 0,
        gamma = beta * (gamma_beta_ratio + alpha * (M - mu_t) / sigma_t)   (stop-gradient).
    Choices where the release is open: the running statistics advance only in training mode (the release also
    advances them during evaluation) and are buffers, so they are saved and restored with ``state_dict``;
    sigma_t = 0 (first step of a one-pair batch) gives a normalized term of 0 instead of a division by 0.
    Defaults: the Llama-3-8B-Instruct config (beta 2.5, gamma/beta 0.6, alpha 0.2, momentum 0.9).
    """

    OPTION_HELP: ClassVar[dict[str, str]] = {
        "momentum": "alpha-DPO running-statistics momentum.",
    }

    needs_reference = True
    length_normalized = True

    def __init__(
        self,
        beta: float = 2.5,
        gamma_beta_ratio: float = 0.6,
        alpha: float = 0.2,
        momentum: float = 0.9,
        label_smoothing: float = 0.0,
        nll_weight: float = 0.0,
        gather: GatherFn | None = None,
    ) -> None:
        super().__init__(beta, label_smoothing, nll_weight, gather)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.gamma_beta_ratio = float(gamma_beta_ratio)
        self.alpha = float(alpha)
        self.momentum = float(momentum)
        self.register_buffer("running_mean", torch.zeros(()))
        self.register_buffer("running_std", torch.zeros(()))

    def response_reward(
        self, logps: torch.Tensor, lengths: torch.Tensor, ref_logps: torch.Tensor | None
    ) -> torch.Tensor:
        return self.beta * mean_logps(logps, lengths)

    def batch_statistic(self, scores: torch.Tensor, inputs: PreferenceInputs) -> torch.Tensor:
        """M: the policy's mean log-ratio minus the reference's."""
        policy_ratio = mean_logps(inputs.chosen_logps, inputs.chosen_lengths) - mean_logps(
            inputs.rejected_logps, inputs.rejected_lengths
        )
        ref_ratio = mean_logps(inputs.ref_chosen_logps, inputs.chosen_lengths) - mean_logps(
            inputs.ref_rejected_logps, inputs.rejected_lengths
        )
        return (policy_ratio - ref_ratio).detach()

    def target_margin(self, scores: torch.Tensor, inputs: PreferenceInputs) -> Margin:
        gap = self.batch_statistic(scores, inputs)
        if self.training:
            stats = batch_stats(gap, self.gather)
            self.running_mean.mul_(self.momentum).add_((1 - self.momentum) * stats.mean.to(self.running_mean))
            self.running_std.mul_(self.momentum).add_((1 - self.momentum) * stats.std.to(self.running_std))
        running = BatchStats(mean=self.running_mean.float(), std=self.running_std.float(), count=0)
        normalized = -standardized_gap(gap, running)  # (M - mu_t) / sigma_t
        values = self.beta * (self.gamma_beta_ratio + self.alpha * normalized)
        return Margin(values=values, mean=self.running_mean.clone(), std=self.running_std.clone())
