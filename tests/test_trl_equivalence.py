"""simpo, cpo, dpo and ipo give TRL's per-pair losses on the same random inputs (to 1e-6).

TRL is the reference users compare against. CPOTrainer exposes ``cpo_loss`` as a method; TRL 1.x computes the
DPO and IPO losses inline in ``DPOTrainer._compute_loss``, so that method is run on a stand-in trainer and a
stand-in model whose fused LM head returns the per-token log-probs we choose (one pair per call, so TRL's
batch mean is the per-pair loss).
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl import DPOTrainer
from trl.experimental.cpo import CPOTrainer

from amapo.losses import PreferenceInputs, build_loss

ATOL = 1e-6


def random_pairs(n: int = 16, seed: int = 0) -> PreferenceInputs:
    g = torch.Generator().manual_seed(seed)
    chosen_lengths = torch.randint(1, 40, (n,), generator=g)
    rejected_lengths = torch.randint(1, 40, (n,), generator=g)
    # Summed log-probs of plausible size: a mean per-token log-prob in (-3, 0), times the length.
    chosen = -3 * torch.rand(n, generator=g, dtype=torch.float64) * chosen_lengths
    rejected = -3 * torch.rand(n, generator=g, dtype=torch.float64) * rejected_lengths
    ref_chosen = chosen + torch.randn(n, generator=g, dtype=torch.float64)
    ref_rejected = rejected + torch.randn(n, generator=g, dtype=torch.float64)
    # float64 so that both implementations round alike; the comparison then tests the formulas, not rounding.
    return PreferenceInputs(chosen, rejected, chosen_lengths, rejected_lengths, ref_chosen, ref_rejected)


def trl_cpo_losses(x: PreferenceInputs, loss_type: str, beta: float, simpo_gamma=0.0, label_smoothing=0.0):
    trainer = SimpleNamespace(
        alpha=0.0,  # AlphaPO reward transform off
        beta=beta,
        loss_type=loss_type,
        simpo_gamma=simpo_gamma,
        label_smoothing=label_smoothing,
        accelerator=SimpleNamespace(device=torch.device("cpu")),
    )
    if loss_type == "simpo":  # CPOTrainer feeds SimPO per-token mean log-probs
        chosen, rejected = x.chosen_logps / x.chosen_lengths, x.rejected_logps / x.rejected_lengths
    else:
        chosen, rejected = x.chosen_logps, x.rejected_logps
    losses, _, _ = CPOTrainer.cpo_loss(trainer, chosen, rejected)
    return losses


class _IdentityAccelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(t):
        return t

    gather_for_metrics = gather


def _trl_dpo_one_pair(x: PreferenceInputs, i: int, loss_type: str, beta: float) -> torch.Tensor:
    """Run TRL's DPOTrainer._compute_loss on pair i: prompt of 1 token, then the response tokens."""
    lengths = [int(x.chosen_lengths[i]), int(x.rejected_lengths[i])]
    seq_len = 1 + max(lengths)
    completion_mask = torch.zeros(2, seq_len, dtype=torch.long)
    per_token_logps = torch.zeros(2, seq_len - 1, dtype=torch.float64)
    for row, (length, total) in enumerate(zip(lengths, (x.chosen_logps[i], x.rejected_logps[i]), strict=True)):
        completion_mask[row, 1 : 1 + length] = 1
        per_token_logps[row, 0] = total  # TRL sums the per-token log-probs: put the whole sum on the first

    def model(**kwargs):
        return SimpleNamespace(
            log_probs=per_token_logps,
            entropy=torch.zeros_like(per_token_logps),
            mean_logits=torch.zeros_like(per_token_logps),
            is_top1=torch.zeros_like(per_token_logps, dtype=torch.bool),
        )

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_IdentityAccelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.ones(2, seq_len, dtype=torch.long),
        "attention_mask": torch.ones(2, seq_len, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": x.ref_chosen_logps[i : i + 1],
        "ref_rejected_logps": x.ref_rejected_logps[i : i + 1],
    }
    return DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)


def trl_dpo_losses(x: PreferenceInputs, loss_type: str, beta: float) -> torch.Tensor:
    return torch.stack([_trl_dpo_one_pair(x, i, loss_type, beta) for i in range(x.batch_size)])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta,ratio", [(2.0, 0.5), (2.5, 0.55), (0.7, 0.0)])
def test_simpo_matches_trl_cpo_trainer(seed, beta, ratio):
    x = random_pairs(seed=seed)
    ours = build_loss("simpo", beta=beta, gamma_beta_ratio=ratio)(x).losses
    # TRL's CPOTrainer takes the absolute simpo_gamma = beta * gamma_beta_ratio.
    theirs = trl_cpo_losses(x, "simpo", beta, simpo_gamma=beta * ratio)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cpo_preference_term_matches_trl(seed, label_smoothing):
    x = random_pairs(seed=seed)
    ours = build_loss("cpo", beta=0.1, nll_weight=0.0, label_smoothing=label_smoothing)(x).losses
    theirs = trl_cpo_losses(x, "sigmoid", 0.1, label_smoothing=label_smoothing)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_cpo_nll_term_equals_token_mean_cross_entropy_for_equal_lengths():
    # TRL adds cpo_alpha * cross-entropy over all chosen tokens of the batch; amapo averages per pair, then
    # over pairs. With equal chosen lengths the two are the same number.
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 7, 11, generator=g)
    labels = torch.randint(0, 11, (4, 7), generator=g)
    token_logps = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    lengths = torch.full((4,), 7)
    x = PreferenceInputs(token_logps.sum(-1), torch.zeros(4), lengths, lengths)
    with_nll = build_loss("cpo", beta=0.1, nll_weight=1.0)(x).loss
    without = build_loss("cpo", beta=0.1, nll_weight=0.0)(x).loss
    cross_entropy = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1))
    torch.testing.assert_close(with_nll - without, cross_entropy, atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_matches_trl_dpo_trainer(seed, beta):
    x = random_pairs(seed=seed)
    ours = build_loss("dpo", beta=beta)(x).losses
    torch.testing.assert_close(ours, trl_dpo_losses(x, "sigmoid", beta), atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_matches_trl_dpo_trainer(seed, beta):
    x = random_pairs(seed=seed)
    ours = build_loss("ipo", beta=beta)(x).losses
    torch.testing.assert_close(ours, trl_dpo_losses(x, "ipo", beta), atol=ATOL, rtol=0)


def test_the_stand_in_trainer_really_runs_trl_code():
    # Guard against a vacuous comparison: TRL's IPO and DPO numbers differ on the same pairs.
    x = random_pairs(seed=5, n=4)
    assert not torch.allclose(trl_dpo_losses(x, "ipo", 0.1), trl_dpo_losses(x, "sigmoid", 0.1))
