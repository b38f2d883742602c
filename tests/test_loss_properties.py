"""Property-based: every method gives a finite loss, finite gradients and per-pair outputs of the right shape
for any batch size, any finite log-probs up to magnitude 1e4, and any input dtype."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amapo.losses import PreferenceInputs, available_losses, build_loss

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@st.composite
def preference_batches(draw):
    n = draw(st.integers(min_value=1, max_value=48))
    magnitude = draw(st.sampled_from([1e-3, 1.0, 100.0, 1e4]))
    dtype = draw(st.sampled_from(DTYPES))
    equal_scores = draw(st.booleans())  # sigma_r = 0 batches
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    g = torch.Generator().manual_seed(seed)

    def logps():
        return -magnitude * torch.rand(n, generator=g, dtype=torch.float64)

    chosen, rejected = logps(), logps()
    if equal_scores:
        chosen, rejected = torch.full((n,), -magnitude / 2, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    lengths_w = torch.randint(1, 200, (n,), generator=g)
    lengths_l = torch.randint(1, 200, (n,), generator=g)
    if equal_scores:
        lengths_w = lengths_l = torch.ones(n, dtype=torch.long)
    return PreferenceInputs(
        chosen.to(dtype).requires_grad_(True),
        rejected.to(dtype).requires_grad_(True),
        lengths_w,
        lengths_l,
        ref_chosen_logps=logps().to(dtype),
        ref_rejected_logps=logps().to(dtype),
        offsets=(torch.rand(n, generator=g, dtype=torch.float64) * magnitude + 1e-3).to(dtype),
    )


@pytest.mark.parametrize("name", available_losses())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=preference_batches())
def test_finite_loss_gradients_and_shapes(name, batch):
    out = build_loss(name)(batch)
    n = batch.batch_size
    assert out.loss.shape == () and out.loss.dtype in (torch.float32, torch.float64)
    for field in ("losses", "chosen_rewards", "rejected_rewards", "scores", "margins", "grad_weights"):
        value = getattr(out, field)
        assert value.shape == (n,), field
        assert torch.isfinite(value).all(), (field, value)
    assert out.ranked_correctly.dtype == torch.bool
    assert (out.margins >= 0).all() or name in {"odpo", "alpha-dpo"}  # only data / running-stat margins go negative
    out.loss.backward()
    for leaf in (batch.chosen_logps, batch.rejected_logps):
        assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype
        assert torch.isfinite(leaf.grad.float()).all()
