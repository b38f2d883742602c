"""AMaPO, paper and released forms, and its ablations: hand-worked numbers, stop-gradient, edge cases.

The 4-pair example (beta = 2, every response 1 token long so the mean log-prob is the log-prob):
    d = mean log pi(y_w) - mean log pi(y_l) = [1.5, 0.5, -0.5, 0.5],  r = beta * d = [3, 1, -1, 1]
Paper form:
    mu_r = 1, sigma_r = sqrt(8/3) = 1.632993 (unbiased), z = (mu_r - r)/sigma_r = [-1.224745, 0, 1.224745, 0]
    gamma = max(z * mu_r, 0) = [0, 0, 1.224745, 0],  h = [0, 0, 2 e^1.224745 = 6.806595, 0]
    L_i = -log sigmoid(r_i - h_i) = [0.048587, 0.313262, 7.807002, 0.313262],  mean 2.120528
    |dL_i/dr_i| = sigmoid(h_i - r_i) = [0.047426, 0.268941, 0.999593, 0.268941]
Released form:
    mu = 0.5, sigma = sqrt(2/3); only d_3 < mu: margin_3 = 2 exp(1.224745 * 0.5) = 3.689606
    L = [0.048587, 0.313262, 4.698754, 0.313262]
"""

from __future__ import annotations

import math

import pytest
import torch

from amapo.losses import PreferenceInputs, build_loss, capped_exp_margin

BETA = 2.0
D = [1.5, 0.5, -0.5, 0.5]


def pairs(d, lengths=None, dtype=torch.float32, requires_grad=False) -> PreferenceInputs:
    """Pairs whose mean log-prob gap is d: chosen = d * |y_w|, rejected = 0."""
    n = len(d)
    lengths = torch.ones(n, dtype=torch.long) if lengths is None else torch.as_tensor(lengths)
    chosen = (torch.tensor(d, dtype=torch.float64) * lengths).to(dtype).requires_grad_(requires_grad)
    return PreferenceInputs(chosen, torch.zeros(n, dtype=dtype), lengths, lengths)


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual.double(), torch.tensor(expected, dtype=torch.float64), atol=atol, rtol=0)


def test_paper_form_hand_worked_four_pairs():
    out = build_loss("amapo", beta=BETA)(pairs(D))
    close(out.scores, [3.0, 1.0, -1.0, 1.0])
    close(out.batch_mean, 1.0)
    close(out.batch_std, 1.632993)
    close(out.margins, [0.0, 0.0, 6.806595, 0.0])
    close(out.losses, [0.048587, 0.313262, 7.807002, 0.313262])
    close(out.loss, 2.120528)
    close(out.grad_weights, [0.047426, 0.268941, 0.999593, 0.268941])
    assert out.ranked_correctly.tolist() == [True, True, False, True]


def test_released_form_hand_worked_four_pairs():
    out = build_loss("amapo-released", beta=BETA)(pairs(D))
    close(out.margins, [0.0, 0.0, 3.689606, 0.0])
    close(out.losses, [0.048587, 0.313262, 4.698754, 0.313262])
    close(out.batch_mean, BETA * 0.5)  # reported in reward units
    close(out.batch_std, BETA * math.sqrt(2 / 3))


def test_released_form_equals_its_code_on_random_batches():
    # The release's expressions, written out independently of amapo's helpers.
    g = torch.Generator().manual_seed(0)
    lengths_w, lengths_l = torch.randint(1, 50, (8,), generator=g), torch.randint(1, 50, (8,), generator=g)
    chosen, rejected = -torch.rand(8, generator=g) * lengths_w, -torch.rand(8, generator=g) * lengths_l
    for beta, ls in [(2.0, 0.0), (3.0, 0.1)]:
        pi_logratios = chosen / lengths_w - rejected / lengths_l
        mean, std = pi_logratios.mean(), pi_logratios.std()
        margin = beta * torch.where(
            pi_logratios - mean < 0, torch.exp(((mean - pi_logratios) / std) * mean), torch.zeros(())
        )
        logits = beta * pi_logratios - margin
        expected = -torch.nn.functional.logsigmoid(logits) * (1 - ls) - torch.nn.functional.logsigmoid(-logits) * ls
        out = build_loss("amapo-released", beta=beta, label_smoothing=ls)(
            PreferenceInputs(chosen, rejected, lengths_w, lengths_l)
        )
        torch.testing.assert_close(out.losses, expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(out.margins, margin, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["amapo", "amapo-released", "amapo-no-znorm", "amapo-no-zero-margin"])
def test_gradient_wrt_score_is_minus_sigmoid_h_minus_r(name):
    """dL/dr_i = -sigmoid(h_i - r_i) / B holds only if no gradient flows through mu_r, sigma_r or h."""
    lengths = torch.tensor([3, 1, 4, 2, 5, 2])
    x = pairs([1.5, 0.5, -0.5, 0.5, -2.0, 0.1], lengths=lengths, requires_grad=True)
    out = build_loss(name, beta=BETA)(x)
    out.loss.backward()
    # r_i = beta * chosen_i / |y_w,i| - ..., so dL/dr_i = dL/dchosen_i * |y_w,i| / beta.
    dl_dr = x.chosen_logps.grad * lengths / BETA
    expected = -torch.sigmoid(out.margins - out.scores) / len(lengths)
    torch.testing.assert_close(dl_dr, expected, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(out.grad_weights, (dl_dr * len(lengths)).abs(), atol=1e-6, rtol=1e-6)


def test_a_margin_without_stop_gradient_would_fail_that_check():
    # The same loss with the margin left in the graph has a different gradient: the check above can fail.
    x = pairs(D, requires_grad=True)
    r = BETA * x.chosen_logps
    mu, sigma = r.mean(), r.std()
    gamma = (((mu - r) / sigma) * mu).clamp(min=0)
    h = torch.where(gamma > 0, BETA * torch.exp(gamma), torch.zeros(()))
    (-torch.nn.functional.logsigmoid(r - h)).mean().backward()
    analytic = -torch.sigmoid(h.detach() - r.detach()) / 4
    assert not torch.allclose(x.chosen_logps.grad / BETA, analytic, atol=1e-3)


@pytest.mark.parametrize("name", ["amapo", "amapo-released"])
def test_equal_scores_give_zero_margin_and_finite_gradients(name):
    x = pairs([0.7, 0.7, 0.7], requires_grad=True)
    out = build_loss(name, beta=BETA)(x)
    out.loss.backward()
    assert out.batch_std.item() == 0.0
    close(out.margins, [0.0, 0.0, 0.0])
    expected = -torch.nn.functional.logsigmoid(torch.tensor(BETA * 0.7))
    close(out.losses, [expected.item()] * 3)
    assert torch.isfinite(x.chosen_logps.grad).all()


@pytest.mark.parametrize("name", ["amapo", "amapo-released", "amapo-no-znorm", "amapo-no-zero-margin"])
def test_one_pair_batch_is_finite(name):
    x = pairs([-0.3], requires_grad=True)
    out = build_loss(name, beta=BETA)(x)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(x.chosen_logps.grad).all()
    expected = BETA if name == "amapo-no-zero-margin" else 0.0  # no spread: gamma = 0
    close(out.margins, [expected])


def test_negative_mean_paper_form_gives_margin_to_above_mean_pair():
    # mu_r < 0: the paper's max(z * mu_r, 0) is positive for pairs above the mean (here the one ranked right).
    out = build_loss("amapo", beta=BETA)(pairs([-1.5, -0.5, 0.5, -0.5]))
    close(out.batch_mean, -1.0)
    close(out.margins, [0.0, 0.0, 6.806595, 0.0])
    assert out.ranked_correctly.tolist() == [False, False, True, False]


def test_negative_mean_released_form_gives_below_mean_pair_a_margin_at_most_beta():
    out = build_loss("amapo-released", beta=BETA)(pairs([-1.5, -0.5, 0.5, -0.5]))
    close(out.margins, [1.084127, 0.0, 0.0, 0.0])
    assert 0 < out.margins[0] <= BETA


@pytest.mark.parametrize("name", ["amapo", "amapo-released", "amapo-no-znorm", "amapo-no-zero-margin"])
def test_scores_of_magnitude_1e4_keep_exact_gradients(name):
    d = [1e4, 2e3, -5e3, 7e3, -1e4, 0.0]
    x = pairs(d, requires_grad=True)
    out = build_loss(name, beta=BETA)(x)
    out.loss.backward()
    assert torch.isfinite(out.losses).all() and torch.isfinite(x.chosen_logps.grad).all()
    # Reference in float64 with no cap: exp may overflow to inf, and then sigmoid(inf - r) = 1 exactly.
    r = BETA * torch.tensor(d, dtype=torch.float64)
    if name == "amapo-released":
        dd = r / BETA
        mu, sd = dd.mean(), dd.std()
        h = torch.where(dd < mu, BETA * torch.exp((mu - dd) / sd * mu), torch.zeros((), dtype=torch.float64))
    else:
        mu, sd = r.mean(), r.std()
        gap = (mu - r) / sd if name != "amapo-no-znorm" else (mu - r)
        gamma = (gap * mu).clamp(min=0)
        h = BETA * torch.exp(gamma)
        if name != "amapo-no-zero-margin":
            h = torch.where(gamma > 0, h, torch.zeros((), dtype=torch.float64))
    expected = -torch.sigmoid(h - r) / len(d)
    assert torch.isinf(h).any() or name == "amapo-no-zero-margin" or h.max() > 1e30  # the cap is exercised
    torch.testing.assert_close(x.chosen_logps.grad.double() / BETA, expected, atol=1e-6, rtol=0)


def test_capped_exp_margin_is_exact_below_the_cap_and_clears_the_score_above_it():
    scores = torch.tensor([1.0, -3.0, 5e3, 0.0])
    exponent = torch.tensor([2.0, 1e5, 1e5, 29.0])
    h = capped_exp_margin(BETA, exponent, scores)
    assert torch.isfinite(h).all()
    close(h[[0, 3]], [BETA * math.exp(2.0), BETA * math.exp(29.0)], atol=1e-3 * BETA * math.exp(29.0))
    assert (h[[1, 2]] >= scores[[1, 2]].abs() + 30).all()


def test_ablations_on_the_hand_worked_example():
    x = pairs(D)
    # no Z-norm: gamma = max((mu_r - r) * mu_r, 0) = [0, 0, 2, 0]
    close(build_loss("amapo-no-znorm", beta=BETA)(x).margins, [0.0, 0.0, BETA * math.exp(2.0), 0.0])
    # no exponential scaling: h = beta * gamma
    close(build_loss("amapo-no-exp", beta=BETA)(x).margins, [0.0, 0.0, BETA * 1.224745, 0.0])
    # neither: h = beta * max((mu_r - r) * mu_r, 0)
    close(build_loss("amapo-no-adaptive", beta=BETA)(x).margins, [0.0, 0.0, 4.0, 0.0])
    # no zero margin: correctly ranked pairs keep beta * e^0 = beta
    close(build_loss("amapo-no-zero-margin", beta=BETA)(x).margins, [BETA, BETA, 6.806595, BETA])


def test_ablations_are_also_flags_of_the_base_method():
    x = pairs(D)
    by_flag = build_loss("amapo", beta=BETA, znorm=False, exp_scaling=False)(x)
    by_name = build_loss("amapo-no-adaptive", beta=BETA)(x)
    torch.testing.assert_close(by_flag.losses, by_name.losses)


def test_correctly_ranked_pairs_get_less_gradient_than_under_simpo():
    # The paper's claim in miniature: AMaPO's weight on pairs ranked right (above the mean) is below SimPO's
    # with its fixed margin, and its weight on pairs ranked wrong is above it.
    x = pairs(D)
    amapo = build_loss("amapo", beta=BETA)(x)
    simpo = build_loss("simpo", beta=BETA, gamma_beta_ratio=0.5)(x)
    right, wrong = amapo.ranked_correctly, ~amapo.ranked_correctly
    assert (amapo.grad_weights[right] < simpo.grad_weights[right]).all()
    assert (amapo.grad_weights[wrong] > simpo.grad_weights[wrong]).all()


def test_bf16_inputs_are_computed_in_fp32():
    x = pairs(D, dtype=torch.bfloat16, requires_grad=True)
    out = build_loss("amapo", beta=BETA)(x)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert x.chosen_logps.grad.dtype == torch.bfloat16
    close(out.losses, [0.048587, 0.313262, 7.807002, 0.313262], atol=1e-4)
