"""The unified margin framework that every amapo loss is an instance of.

AMaPO (Adaptive Margin-attached Preference Optimization, AAAI 2026, arXiv 2511.09385, Sec. 3) writes the
offline preference losses as

    L = -m(h_w(log pi_w) - h_l(log pi_l) - gamma) + Lambda(log pi_w)

In code a method is four small choices, and nothing else:

* ``response_reward``: h, the implicit reward of one response (e.g. beta * mean log-prob for SimPO);
  the score r = h_w - h_l;
* ``target_margin``: gamma, the margin the score must clear (constant, from data, or adaptive); never
  differentiated (stop-gradient), as in every paper here;
* ``link``: the per-pair loss of z = r - gamma, i.e. -m (e.g. -log sigmoid(z));
* ``nll_weight``: Lambda = nll_weight * (-log pi(y_w|x) / |y_w|), the optional likelihood term.

Convention where the paper is open: for reference-based methods (DPO, IPO, ...) the reference log-ratio is
folded into h (h = beta * log(pi / pi_ref)), as TRL reports rewards, rather than into gamma as the paper's
analysis writes it. The two are the same loss (r - gamma is identical) and the same dL/dr; this way
"ranked correctly" is always r > 0 and ``rewards/*`` match TRL's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from amapo.losses.stats import GatherFn


@dataclass(frozen=True)
class PreferenceInputs:
    """Per-pair inputs of a preference loss; every tensor has shape [batch].

    Attributes:
        chosen_logps: summed log pi(y_w|x) over the response tokens (prompt excluded).
        rejected_logps: summed log pi(y_l|x).
        chosen_lengths: number of response tokens of y_w (the |y_w| that length-normalized methods divide by).
        rejected_lengths: number of response tokens of y_l.
        ref_chosen_logps: summed reference log-probs of y_w; needed by reference-based methods only.
        ref_rejected_logps: summed reference log-probs of y_l.
        offsets: a per-pair value from the dataset (ODPO: the score difference s_w - s_l).

    Log-probs may be fp16/bf16; losses compute in fp32 (fp64 inputs stay fp64). Lengths are clamped to at least 1 before
    dividing, so an empty response gives a mean log-prob of 0 rather than 0/0.
    """

    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    ref_chosen_logps: torch.Tensor | None = None
    ref_rejected_logps: torch.Tensor | None = None
    offsets: torch.Tensor | None = None

    def __post_init__(self) -> None:
        shape = None
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"PreferenceInputs.{field.name} must be a torch.Tensor, got {type(value).__name__}")
            if value.dim() != 1:
                raise ValueError(f"PreferenceInputs.{field.name} must be 1-D [batch], got shape {tuple(value.shape)}")
            if shape is None:
                shape = value.shape
            elif value.shape != shape:
                raise ValueError(
                    f"PreferenceInputs.{field.name} has shape {tuple(value.shape)}, but chosen_logps has {tuple(shape)}"
                )
        if (self.ref_chosen_logps is None) != (self.ref_rejected_logps is None):
            raise ValueError("PreferenceInputs: give both ref_chosen_logps and ref_rejected_logps, or neither")

    def at_least_fp32(self) -> PreferenceInputs:
        """A copy with fp16/bf16 log-probs upcast to fp32 (fp32 and fp64 kept), where losses compute."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps", "offsets"):
            values[name] = _at_least_fp32(values[name])
        return PreferenceInputs(**values)

    @property
    def batch_size(self) -> int:
        return self.chosen_logps.shape[0]

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen_logps is not None


@dataclass(frozen=True)
class Margin:
    """The target margin gamma of each pair, with the batch statistics it came from (if any)."""

    values: torch.Tensor
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    count: float | None = None


@dataclass(frozen=True)
class LossOutput:
    """What a preference loss returns. All per-pair tensors have shape [batch] and, but for ``losses``, no grad.

    Attributes:
        loss: the scalar to back-propagate, the mean of ``losses``.
        losses: per-pair losses link(r - gamma) + Lambda.
        chosen_rewards / rejected_rewards: the implicit rewards h_w, h_l.
        scores: r = h_w - h_l (TRL's ``rewards/margins`` per pair).
        margins: gamma, the target margin applied to each pair.
        grad_weights: |dL_i / dr_i| = |link'(r - gamma)|, the per-pair gradient weight of the paper's
            gradient-dynamics analysis (per pair, before the 1/batch of the mean).
        ranked_correctly: r > 0, the chosen response has the higher implicit reward.
        batch_mean / batch_std: the statistics adaptive margins were taken from (None for fixed margins): 0-D
            when the batch shares one pool, else each pair's pool's.
        batch_count: how many pairs those statistics pooled (the micro-batch, all ranks, the whole step, or a
            pool of ``margin_pool_size`` pairs).
    """

    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    scores: torch.Tensor
    margins: torch.Tensor
    grad_weights: torch.Tensor
    ranked_correctly: torch.Tensor
    batch_mean: torch.Tensor | None = None
    batch_std: torch.Tensor | None = None
    batch_count: float | None = None

    def metrics(self) -> dict[str, float]:
        """Batch means under TRL's metric names, plus amapo's margin and gradient-weight metrics."""
        out = {
            "loss": self.loss.item(),
            "rewards/chosen": self.chosen_rewards.mean().item(),
            "rewards/rejected": self.rejected_rewards.mean().item(),
            "rewards/accuracies": self.ranked_correctly.float().mean().item(),
            "rewards/margins": self.scores.mean().item(),
            "margin/mean": self.margins.mean().item(),
            "margin/max": self.margins.max().item(),
            "margin/zero_fraction": (self.margins == 0).float().mean().item(),
        }
        for name, mask in (("correct", self.ranked_correctly), ("incorrect", ~self.ranked_correctly)):
            if mask.any():
                out[f"grad_weight/{name}"] = self.grad_weights[mask].mean().item()
        if self.batch_mean is not None:  # pools: the mean over this batch's pairs of their pool's statistics
            out["batch/mu"] = self.batch_mean.mean().item()
            out["batch/sigma"] = self.batch_std.mean().item()
        if self.batch_count is not None:
            out["batch/pairs"] = float(self.batch_count)
        return out


def _at_least_fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    """Upcast fp16/bf16 (and integer) tensors to fp32; keep fp32 and fp64 as they are."""
    return None if t is None else t.to(torch.promote_types(t.dtype, torch.float32))


def mean_logps(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """log pi(y|x) / |y|, with |y| clamped to 1 so an empty response gives 0, not 0/0 (TRL #1033)."""
    return logps / lengths.clamp(min=1)


class PreferenceLoss(nn.Module):
    """Base of every loss: L_i = link(r_i - sg[gamma_i]) + nll_weight * (-log pi(y_w|x) / |y_w|).

    Subclasses set the class flags below and override ``target_margin`` and/or ``link``; ``forward`` is
    shared, so every method reports the same outputs. The flags are what a training loop asks a loss:
    whether to load a reference model, whether log-probs are length-normalized, whether the dataset must
    carry a per-pair offset column.

    Args:
        beta: reward scale beta (> 0).
        label_smoothing: epsilon of the conservative (cDPO) form of the sigmoid link,
            -(1 - eps) log sigmoid(z) - eps log sigmoid(-z); 0 gives the plain link. In [0, 0.5).
        nll_weight: weight of the length-normalized NLL term on y_w (CPO's alpha; AMaPO release's
            ``sft_weight``; TRL's ``cpo_alpha``). TRL averages the NLL over all chosen tokens of the batch;
            amapo averages per pair, then over pairs, so that the loss decomposes per pair; the two agree
            when chosen lengths are equal.
        gather: which batch adaptive statistics are taken over (see ``amapo.losses.stats``).
    """

    # What each option of ``amapo train`` means (``amapo.loss_options``); a subclass adds its own.
    OPTION_HELP: ClassVar[dict[str, str]] = {
        "beta": "Reward scale beta (default: the method's).",
        "label_smoothing": "cDPO label smoothing (sigmoid links).",
        "nll_weight": "Weight of the NLL term on chosen (CPO).",
    }

    needs_reference: ClassVar[bool] = False
    needs_offsets: ClassVar[bool] = False
    length_normalized: ClassVar[bool] = False
    # The margin of each pair comes from the mean and std of its pool (``amapo.losses.stats``), so the pool can be
    # chosen per pair (``margin_pool_size``); alpha-DPO's running statistics are not of this kind.
    margin_from_pool_statistics: ClassVar[bool] = False

    def __init__(
        self,
        beta: float,
        label_smoothing: float = 0.0,
        nll_weight: float = 0.0,
        gather: GatherFn | None = None,
    ) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
        if not nll_weight >= 0:
            raise ValueError(f"nll_weight must be >= 0, got {nll_weight}")
        self.beta = float(beta)
        self.label_smoothing = float(label_smoothing)
        self.nll_weight = float(nll_weight)
        self.gather = gather

    # --- the four choices of the unified form -------------------------------------------------------------

    def response_reward(
        self, logps: torch.Tensor, lengths: torch.Tensor, ref_logps: torch.Tensor | None
    ) -> torch.Tensor:
        """h(y) = beta * log pi(y|x) [- beta * log pi_ref(y|x)], per token if ``length_normalized``."""
        if self.length_normalized:
            logps = mean_logps(logps, lengths)
            ref_logps = None if ref_logps is None else mean_logps(ref_logps, lengths)
        if self.needs_reference:
            return self.beta * (logps - ref_logps)
        return self.beta * logps

    def target_margin(self, scores: torch.Tensor, inputs: PreferenceInputs) -> Margin:
        """gamma for each pair, given the detached scores r. Default: no margin."""
        return Margin(values=torch.zeros_like(scores))

    def batch_statistic(self, scores: torch.Tensor, inputs: PreferenceInputs) -> torch.Tensor | None:
        """The per-pair values whose batch mean and std set an adaptive margin; None if the margin has none.

        ``gather`` receives exactly these values, so a training loop that defines "the batch" itself (all
        ranks, or the whole optimizer step) can compute them for every pair of that batch and hand them back.
        """
        return None

    def scores_of(self, inputs: PreferenceInputs) -> torch.Tensor:
        """r = h_w - h_l for inputs already in fp32 (see ``forward``)."""
        chosen = self.response_reward(inputs.chosen_logps, inputs.chosen_lengths, inputs.ref_chosen_logps)
        rejected = self.response_reward(inputs.rejected_logps, inputs.rejected_lengths, inputs.ref_rejected_logps)
        return chosen - rejected

    def link(self, z: torch.Tensor) -> torch.Tensor:
        """Per-pair loss of z = r - gamma: -(1 - eps) log sigmoid(z) - eps log sigmoid(-z)."""
        losses = -F.logsigmoid(z)
        if self.label_smoothing:
            losses = (1 - self.label_smoothing) * losses - self.label_smoothing * F.logsigmoid(-z)
        return losses

    # --- shared ---------------------------------------------------------------------------------------------

    def check_inputs(self, inputs: PreferenceInputs) -> None:
        name = type(self).__name__
        if self.needs_reference and not inputs.has_reference:
            raise ValueError(
                f"{name} is reference-based: PreferenceInputs.ref_chosen_logps and ref_rejected_logps are required"
            )
        if self.needs_offsets and inputs.offsets is None:
            raise ValueError(f"{name} needs a per-pair offset: PreferenceInputs.offsets is required")

    def forward(self, inputs: PreferenceInputs) -> LossOutput:
        self.check_inputs(inputs)
        x = inputs.at_least_fp32()
        chosen_rewards = self.response_reward(x.chosen_logps, x.chosen_lengths, x.ref_chosen_logps)
        rejected_rewards = self.response_reward(x.rejected_logps, x.rejected_lengths, x.ref_rejected_logps)
        scores = chosen_rewards - rejected_rewards

        margin = self.target_margin(scores.detach(), x)
        gamma = margin.values.detach()  # stop-gradient: the margin is a target, not a path for the gradient
        losses = self.link(scores - gamma)
        if self.nll_weight:
            losses = losses - self.nll_weight * mean_logps(x.chosen_logps, x.chosen_lengths)

        detached_scores = scores.detach()
        return LossOutput(
            loss=losses.mean(),
            losses=losses,
            chosen_rewards=chosen_rewards.detach(),
            rejected_rewards=rejected_rewards.detach(),
            scores=detached_scores,
            margins=gamma,
            grad_weights=self.link_slope(detached_scores - gamma).abs(),
            ranked_correctly=detached_scores > 0,
            batch_mean=margin.mean,
            batch_std=margin.std,
            batch_count=margin.count,
        )

    def link_slope(self, z: torch.Tensor) -> torch.Tensor:
        """d link / dz at each z, by autograd on a detached copy (works inside ``torch.no_grad`` too)."""
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(self.link(leaf).sum(), leaf)
        return slope

    def extra_repr(self) -> str:
        return f"beta={self.beta}, label_smoothing={self.label_smoothing}, nll_weight={self.nll_weight}"
