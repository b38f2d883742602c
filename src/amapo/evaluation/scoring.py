"""Score a model on preference pairs: ranking accuracy, reward margins and gradient weights, per method.

Log-probs are computed once (``compute_pair_logps``); any number of methods then read them
(``score_with_loss``), so the paper's static gradient analysis compares methods on the very same scores.

Gradient indicators (AMaPO paper, Sec. 3 "overfitting-underfitting dilemma"), from per-pair weights
w_i = |dL_i/dr_i| and the set C of pairs ranked right (r_i > 0):

    overfitting  = sum_{i in C} w_i / sum_i w_i        share of the gradient spent on pairs already ranked right
    underfitting = mean_{i not in C} (1 - w_i)          weight missing on pairs ranked wrong, against the full
                                                        weight 1 that the sigmoid link gives a badly ranked pair

Lower is better for both. The reference weight 1 is the sigmoid link's supremum; for IPO's square link,
whose weight is unbounded, the underfitting value can be negative and is not comparable across links.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from amapo.data import PreferenceCollator
from amapo.data.collator import device_batches
from amapo.evaluation.response_sets import response_scores, response_set_metrics
from amapo.evaluation.sets import LoadedSet
from amapo.hf_internals import attention_implementation
from amapo.losses import PreferenceInputs, PreferenceLoss
from amapo.model.layouts import DenseMaskCost, collator_options, layout_of_model
from amapo.model.logps import REFERENCE_COLUMNS, enable_response_logps, sequence_logps
from amapo.model.wrappers import causal_lm_of


def slice_pairs(inputs: PreferenceInputs, start: int, stop: int) -> PreferenceInputs:
    """Pairs [start, stop) of ``inputs``."""
    values = {f.name: getattr(inputs, f.name) for f in fields(inputs)}
    return PreferenceInputs(**{k: None if v is None else v[start:stop] for k, v in values.items()})


@torch.no_grad()
def compute_pair_logps(
    model, dataset, *, pad_token_id: int, batch_size: int = 32, ref_model=None, device=None, layout: str = "auto"
) -> PreferenceInputs:
    """Log-probs of every pair of a tokenized dataset (``amapo.data.tokenize_dataset``), in dataset order.

    Reference log-probs come from the dataset's ``ref_*`` columns when present, else from ``ref_model``.
    ``layout``: the collator's batch layout (auto: the fastest that the model's attention computes exactly; on
    eager / sdpa shared_prompt or padded per batch, by the memory each costs without gradients).
    """
    device = device or next(model.parameters()).device
    model.eval()
    for scorer in (model, ref_model):
        if scorer is not None and hasattr(scorer, "get_output_embeddings"):  # a transformers causal LM
            enable_response_logps(scorer)
    layout = layout_of_model(layout, model)
    config = getattr(causal_lm_of(model), "config", None)
    attention = attention_implementation(config)
    cost = DenseMaskCost.of(config, attention, getattr(model, "dtype", None), training=False) if config else None
    has_offsets = "offset" in dataset.column_names
    has_ref_columns = all(c in dataset.column_names for c in REFERENCE_COLUMNS)
    extra = (["offset"] if has_offsets else []) + (list(REFERENCE_COLUMNS) if has_ref_columns else [])
    collator = PreferenceCollator(pad_token_id, extra_columns=extra, **collator_options(layout, attention, cost))
    parts: dict[str, list[torch.Tensor]] = {f.name: [] for f in fields(PreferenceInputs)}
    for batch in device_batches(dataset, collator, batch_size, device):
        logps, lengths = sequence_logps(model, batch)
        n = logps.shape[0] // 2
        parts["chosen_logps"].append(logps[:n].cpu())
        parts["rejected_logps"].append(logps[n:].cpu())
        parts["chosen_lengths"].append(lengths[:n].cpu())
        parts["rejected_lengths"].append(lengths[n:].cpu())
        if has_ref_columns:
            parts["ref_chosen_logps"].append(batch["ref_chosen_logps"].cpu())
            parts["ref_rejected_logps"].append(batch["ref_rejected_logps"].cpu())
        elif ref_model is not None:
            ref_logps, _ = sequence_logps(ref_model.eval(), batch)
            parts["ref_chosen_logps"].append(ref_logps[:n].cpu())
            parts["ref_rejected_logps"].append(ref_logps[n:].cpu())
        if has_offsets:
            parts["offsets"].append(batch["offset"].cpu())
    return PreferenceInputs(**{k: torch.cat(v) if v else None for k, v in parts.items()})


@dataclass
class PairScores:
    """Per-pair results of one method on one set of pairs (numpy arrays, dataset order)."""

    scores: np.ndarray
    chosen_rewards: np.ndarray
    rejected_rewards: np.ndarray
    margins: np.ndarray
    grad_weights: np.ndarray
    ranked_correctly: np.ndarray

    def accuracy(self) -> float:
        return float(self.ranked_correctly.mean())

    def margin_distribution(self) -> dict[str, float]:
        """Distribution of the reward margins r = h_w - h_l (mean, std and quantiles)."""
        q = np.quantile(self.scores, [0.05, 0.25, 0.5, 0.75, 0.95])
        return {
            "reward_margin/mean": float(self.scores.mean()),
            "reward_margin/std": float(self.scores.std()),
            **{
                f"reward_margin/q{int(p * 100):02d}": float(v)
                for p, v in zip((0.05, 0.25, 0.5, 0.75, 0.95), q, strict=True)
            },
        }

    def gradient_indicators(self) -> dict[str, float]:
        """Overfitting and underfitting indicators (module docstring) and the mean weight of each group."""
        right, wrong, w = self.ranked_correctly, ~self.ranked_correctly, self.grad_weights
        total = w.sum()
        out = {
            "gradient/overfitting": float(w[right].sum() / total) if total > 0 else 0.0,
            "gradient/underfitting": float((1.0 - w[wrong]).mean()) if wrong.any() else 0.0,
        }
        if right.any():
            out["grad_weight/correct"] = float(w[right].mean())
        if wrong.any():
            out["grad_weight/incorrect"] = float(w[wrong].mean())
        return out

    def summary(self) -> dict[str, float]:
        return {"accuracy": self.accuracy(), **self.margin_distribution(), **self.gradient_indicators()}


@torch.no_grad()
def score_with_loss(logps: PreferenceInputs, loss_fn: PreferenceLoss, batch_size: int = 32) -> PairScores:
    """Apply one method to precomputed log-probs, ``batch_size`` pairs at a time.

    Adaptive margins (AMaPO) take their batch statistics over each batch of ``batch_size`` pairs, as in
    training with that micro-batch size; fixed-margin methods do not depend on it.
    """
    loss_fn.eval()
    outputs = [loss_fn(slice_pairs(logps, s, s + batch_size)) for s in range(0, logps.batch_size, batch_size)]

    def cat(name: str) -> np.ndarray:
        return torch.cat([getattr(o, name) for o in outputs]).float().numpy()

    return PairScores(
        scores=cat("scores"),
        chosen_rewards=cat("chosen_rewards"),
        rejected_rewards=cat("rejected_rewards"),
        margins=cat("margins"),
        grad_weights=cat("grad_weights"),
        ranked_correctly=torch.cat([o.ranked_correctly for o in outputs]).numpy(),
    )


@dataclass
class SetScores:
    """One set scored: its metrics; per pair (pairs sets) or per response ([rows, K], response sets) details."""

    metrics: dict[str, float]
    pairs: PairScores | None = None
    responses: np.ndarray | None = None


@torch.no_grad()
def score_set(model, loaded: LoadedSet, loss_fn: PreferenceLoss, *, pad_token_id: int, batch_size: int = 32,
              ref_model=None) -> SetScores:  # fmt: skip
    """A loaded set's numbers under ``loss_fn``'s implicit reward: pair accuracy, margins and gradient indicators for
    pairs; each benchmark's own numbers for sets of several responses per prompt (``evaluation.response_sets``)."""
    logps = compute_pair_logps(
        model, loaded.tokenized, pad_token_id=pad_token_id, batch_size=batch_size, ref_model=ref_model
    )
    if loaded.responses is None:
        scores = score_with_loss(logps, loss_fn, batch_size)
        return SetScores({"pairs": float(len(scores.scores)), **scores.summary()}, pairs=scores)
    x = logps.at_least_fp32()
    chosen = loss_fn.response_reward(x.chosen_logps, x.chosen_lengths, x.ref_chosen_logps)
    rejected = loss_fn.response_reward(x.rejected_logps, x.rejected_lengths, x.ref_rejected_logps)
    rewards = response_scores(chosen.numpy(), rejected.numpy(), loaded.responses)
    return SetScores(response_set_metrics(rewards, loaded.responses), responses=rewards)
