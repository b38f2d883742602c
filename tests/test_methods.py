"""The baselines beyond TRL's (odpo, focalpo, alpha-dpo), the shared outputs of every method, and the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from amapo.losses import PreferenceInputs, available_losses, build_loss, loss_spec


def random_pairs(n=8, seed=0, requires_grad=False) -> PreferenceInputs:
    g = torch.Generator().manual_seed(seed)
    lw, ll = torch.randint(1, 30, (n,), generator=g), torch.randint(1, 30, (n,), generator=g)
    chosen = (-2 * torch.rand(n, generator=g) * lw).requires_grad_(requires_grad)
    rejected = -2 * torch.rand(n, generator=g) * ll
    return PreferenceInputs(
        chosen,
        rejected,
        lw,
        ll,
        ref_chosen_logps=chosen.detach() + torch.randn(n, generator=g),
        ref_rejected_logps=rejected + torch.randn(n, generator=g),
        offsets=torch.rand(n, generator=g) * 5 + 0.1,
    )


# --- every method ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", available_losses())
def test_grad_weight_is_the_autograd_derivative_of_each_pair_loss_wrt_its_score(name):
    """|dL_i/dr_i| reported equals autograd's, which also shows every margin is stop-gradient."""
    x = random_pairs(requires_grad=True)
    loss_fn = build_loss(name, nll_weight=0.0)
    out = loss_fn(x)
    (grad_chosen,) = torch.autograd.grad(out.losses.sum(), x.chosen_logps)
    # dr_i/dchosen_i is d h(y_w)/d log pi(y_w): beta, beta/|y_w|, or 1/|y_w| depending on the method.
    leaf = x.chosen_logps.detach().requires_grad_(True)
    (dh,) = torch.autograd.grad(loss_fn.response_reward(leaf, x.chosen_lengths, x.ref_chosen_logps).sum(), leaf)
    torch.testing.assert_close(out.grad_weights, (grad_chosen / dh).abs(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", available_losses())
def test_outputs_have_one_value_per_pair_and_consistent_definitions(name):
    x = random_pairs()
    out = build_loss(name)(x)
    for field in ("losses", "chosen_rewards", "rejected_rewards", "scores", "margins", "grad_weights"):
        assert getattr(out, field).shape == (8,), field
    torch.testing.assert_close(out.scores, out.chosen_rewards - out.rejected_rewards)
    assert out.ranked_correctly.tolist() == (out.scores > 0).tolist()
    torch.testing.assert_close(out.loss, out.losses.mean())
    metrics = out.metrics()
    assert metrics["rewards/accuracies"] == pytest.approx(out.ranked_correctly.float().mean().item())
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", ["dpo", "simpo", "amapo", "alpha-dpo"])
def test_nll_weight_adds_the_length_normalized_nll_of_the_chosen_response(name):
    x = random_pairs()
    plain = build_loss(name, nll_weight=0.0).eval()(x).losses
    with_nll = build_loss(name, nll_weight=0.5).eval()(x).losses
    torch.testing.assert_close(with_nll - plain, -0.5 * x.chosen_logps / x.chosen_lengths)


def test_label_smoothing_is_the_conservative_dpo_form():
    x = random_pairs()
    out = build_loss("dpo", beta=0.3, label_smoothing=0.2)(x)
    z = out.scores
    torch.testing.assert_close(out.losses, -0.8 * F.logsigmoid(z) - 0.2 * F.logsigmoid(-z))


def test_empty_response_gives_mean_logp_zero_not_nan():
    x = PreferenceInputs(
        torch.tensor([0.0, -3.0]), torch.tensor([-2.0, -1.0]), torch.tensor([0, 3]), torch.tensor([2, 1])
    )
    out = build_loss("simpo")(x)
    assert torch.isfinite(out.losses).all()
    assert out.chosen_rewards[0].item() == 0.0


# --- ODPO --------------------------------------------------------------------------------------------------


def test_odpo_margin_is_alpha_log_offset():
    x = random_pairs()
    out = build_loss("odpo", beta=0.5, alpha=0.7)(x)
    torch.testing.assert_close(out.margins, 0.7 * x.offsets.log())
    dpo_logits = 0.5 * ((x.chosen_logps - x.ref_chosen_logps) - (x.rejected_logps - x.ref_rejected_logps))
    # ODPO's released loss: -log sigmoid(beta * h - alpha * log(offset)).
    torch.testing.assert_close(out.losses, -F.logsigmoid(dpo_logits - 0.7 * x.offsets.log()))
    identity = build_loss("odpo", alpha=0.7, offset_transform="identity")(x)
    torch.testing.assert_close(identity.margins, 0.7 * x.offsets)


def test_odpo_rejects_non_positive_offset_naming_the_pair():
    x = random_pairs()
    bad = PreferenceInputs(**{**x.__dict__, "offsets": torch.tensor([1.0, 2.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])})
    with pytest.raises(ValueError, match=r"pair 2 is 0\.0"):
        build_loss("odpo")(bad)


def test_odpo_requires_offsets():
    x = random_pairs()
    no_offsets = PreferenceInputs(**{**x.__dict__, "offsets": None})
    with pytest.raises(ValueError, match="offsets is required"):
        build_loss("odpo")(no_offsets)


# --- FocalPO -----------------------------------------------------------------------------------------------


def test_focalpo_is_dpo_scaled_by_p_to_the_gamma():
    x = random_pairs()
    out = build_loss("focalpo", beta=0.1, focal_gamma=0.5)(x)
    p = torch.sigmoid(out.scores)
    torch.testing.assert_close(out.losses, -(p**0.5) * torch.log(p))


def test_focalpo_down_weights_misranked_pairs_relative_to_dpo():
    z = torch.tensor([-4.0, 4.0])
    x = PreferenceInputs(z / 0.1, torch.zeros(2), torch.ones(2), torch.ones(2), torch.zeros(2), torch.zeros(2))
    focal = build_loss("focalpo", beta=0.1, focal_gamma=0.5)(x).grad_weights
    dpo = build_loss("dpo", beta=0.1)(x).grad_weights
    assert focal[0] / dpo[0] < focal[1] / dpo[1]  # the wrong pair loses more weight than the right one


# --- alpha-DPO ---------------------------------------------------------------------------------------------


def released_alpha_dpo(steps, beta, ratio, alpha, momentum=0.9):
    """The released AlphaDPOTrainer's expressions (ln=True), written out step by step."""
    mean_state, std_state = torch.zeros(1), torch.zeros(1)
    losses = []
    for x in steps:
        pw, pl = x.chosen_logps / x.chosen_lengths, x.rejected_logps / x.rejected_lengths
        rw, rl = x.ref_chosen_logps / x.chosen_lengths, x.ref_rejected_logps / x.rejected_lengths
        pi_logratios = pw - pl
        gap = pi_logratios - (rw - rl)
        mean_state = mean_state * momentum + gap.mean() * (1 - momentum)
        std_state = std_state * momentum + gap.std() * (1 - momentum)
        constant = ((gap - mean_state) / std_state * alpha + ratio).detach()
        losses.append(-F.logsigmoid(beta * (pi_logratios - constant)))
    return losses


def test_alpha_dpo_matches_its_release_over_several_steps():
    steps = [random_pairs(seed=s) for s in range(4)]
    loss_fn = build_loss("alpha-dpo", beta=2.5, gamma_beta_ratio=0.6, alpha=0.2)
    for x, expected in zip(steps, released_alpha_dpo(steps, 2.5, 0.6, 0.2), strict=True):
        torch.testing.assert_close(loss_fn(x).losses, expected, atol=1e-5, rtol=1e-5)


def test_alpha_dpo_running_statistics_advance_only_in_training_and_are_saved():
    loss_fn = build_loss("alpha-dpo")
    loss_fn(random_pairs(seed=0))
    state = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    assert state["running_std"].item() > 0
    loss_fn.eval()
    loss_fn(random_pairs(seed=1))
    assert torch.equal(loss_fn.running_mean, state["running_mean"])
    restored = build_loss("alpha-dpo")
    restored.load_state_dict(state)
    x = random_pairs(seed=2)
    torch.testing.assert_close(restored.eval()(x).losses, loss_fn(x).losses)


# --- registry and input validation -------------------------------------------------------------------------


def test_registry_lists_the_paper_methods_and_ablations():
    expected = {"amapo", "amapo-released", "amapo-no-znorm", "amapo-no-exp", "amapo-no-adaptive"}
    expected |= {"amapo-no-zero-margin", "simpo", "dpo", "ipo", "cpo", "odpo", "focalpo", "alpha-dpo"}
    assert expected <= set(available_losses())
    for name in available_losses():
        spec = loss_spec(name)
        assert spec.summary and spec.cls.__doc__, name
        assert "beta" in spec.defaults()


def test_paper_defaults():
    assert loss_spec("amapo").defaults()["beta"] == 2.0
    assert loss_spec("amapo-no-znorm").defaults()["znorm"] is False
    assert loss_spec("simpo").defaults()["gamma_beta_ratio"] == 0.5
    assert loss_spec("cpo").defaults()["nll_weight"] == 1.0
    assert build_loss("amapo").zero_margin is True


def test_unknown_method_error_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown loss 'amapo2'.*amapo-released"):
        build_loss("amapo2")


def test_unknown_option_error_names_the_option_and_the_accepted_ones():
    with pytest.raises(ValueError, match=r"no option 'gamma'.*gamma_beta_ratio"):
        build_loss("simpo", gamma=1.0)


def test_option_fixed_by_the_name_cannot_be_overridden():
    with pytest.raises(ValueError, match="'znorm' is fixed by the name 'amapo-no-znorm'"):
        build_loss("amapo-no-znorm", znorm=True)


@pytest.mark.parametrize("bad", [{"beta": 0.0}, {"beta": -1.0}, {"label_smoothing": 0.5}, {"nll_weight": -1.0}])
def test_invalid_hyperparameters_are_rejected_by_name(bad):
    (option,) = bad
    with pytest.raises(ValueError, match=option):
        build_loss("amapo", **bad)


def test_reference_based_method_without_reference_is_a_clear_error():
    x = random_pairs()
    no_ref = PreferenceInputs(x.chosen_logps, x.rejected_logps, x.chosen_lengths, x.rejected_lengths)
    with pytest.raises(ValueError, match=r"reference-based.*ref_chosen_logps"):
        build_loss("dpo")(no_ref)


def test_mismatched_shapes_name_the_field():
    with pytest.raises(ValueError, match="rejected_lengths has shape"):
        PreferenceInputs(torch.zeros(3), torch.zeros(3), torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="both ref_chosen_logps and ref_rejected_logps"):
        PreferenceInputs(torch.zeros(3), torch.zeros(3), torch.ones(3), torch.ones(3), ref_chosen_logps=torch.zeros(3))


# --- the command line's loss options come from the losses (issue 14) ----------------------------------------------


def test_command_line_loss_options_are_exactly_the_registered_losses_options():
    """``amapo.loss_options`` reads the losses' sources without torch; what it reads must be what the registry
    builds: every option of every registered method, with the type of its default."""
    from amapo.loss_options import scan_loss_options
    from amapo.losses import available_losses, loss_spec
    from amapo.train.options import LOSS_OPTIONS

    scanned = scan_loss_options()
    registered: dict[str, type] = {}
    for name in available_losses():
        for option, default in loss_spec(name).defaults().items():
            registered.setdefault(option, type(default))
    assert set(scanned) == set(registered) == set(LOSS_OPTIONS)
    assert {n: o.type for n, o in scanned.items()} == registered
    assert all(o.help for o in scanned.values())


def test_a_new_loss_file_brings_its_option_to_the_command_line(tmp_path):
    from amapo.loss_options import scan_loss_options

    (tmp_path / "tau.py").write_text(
        "from typing import ClassVar\n"
        "@register_loss('taupo', 'a loss with a temperature')\n"
        "class TauLoss(PreferenceLoss):\n"
        "    OPTION_HELP: ClassVar[dict[str, str]] = {'tau': 'Temperature of TauPO.'}\n"
        "    def __init__(self, beta: float = 1.0, tau: float = 0.5, gather=None) -> None:\n"
        "        super().__init__(beta, 0.0, 0.0, gather)\n"
    )
    (tmp_path / "base.py").write_text(
        "class PreferenceLoss:\n    OPTION_HELP: ClassVar[dict[str, str]] = {'beta': 'Reward scale beta.'}\n"
    )
    options = scan_loss_options(tmp_path)
    assert list(options) == ["beta", "tau"] and options["tau"].type is float
    assert options["tau"].help == "Temperature of TauPO."
    (tmp_path / "tau.py").write_text(
        (tmp_path / "tau.py").read_text().replace("{'tau': 'Temperature of TauPO.'}", "{}")
    )
    with pytest.raises(TypeError, match="tau have no OPTION_HELP"):
        scan_loss_options(tmp_path)
