"""``--lm_head_kernel liger``: amapo's call of Liger-Kernel's fused linear cross-entropy (issue 34).

* with a stand-in liger-kernel (none needed): the arguments land in the slots of liger-kernel 0.8.5's
  ``LigerFusedLinearCrossEntropyFunction.forward``, fp32 gradient accumulation included, the log-probs are the
  negated losses in fp32, and a liger-kernel without that argument (or with the wrong per-token gradients) is refused;
* with liger-kernel, on a CUDA GPU or in Triton's CPU interpreter (``TRITON_INTERPRET=1``, triton and liger-kernel
  installed): log-probs and gradients against the chunked head, at the precision fp32 accumulation allows.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import sys

import pytest
import torch

from amapo.errors import UserError
from amapo.model.lm_head import LogitTransform, check_kernel, token_logps_from_hidden


def forward_0_8_5(ctx, _input, weight, target, bias=None, ce_weight=None, ignore_index=-100, lse_square_scale=0.0,
                  label_smoothing=0.0, reduction="mean", softcap=None, return_z_loss=False, accum_dtype=None,
                  use_token_scaling=False, return_token_accuracy=False, return_predicted_tokens=False, ce_impl=None,
                  ce_mode=None, chunk_mem_const=1):  # fmt: skip
    """liger-kernel 0.8.5's ``LigerFusedLinearCrossEntropyFunction.forward`` signature."""


def forward_0_6_1(ctx, _input, weight, target, bias=None, ce_weight=None, ignore_index=-100, lse_square_scale=0.0,
                  label_smoothing=0.0, reduction="mean", softcap=None, return_z_loss=False):  # fmt: skip
    """liger-kernel 0.6.1's: no ``accum_dtype`` yet (it came in 0.6.2)."""


def stand_in_liger(monkeypatch, forward=forward_0_8_5, version: str | None = "0.8.5", losses=None) -> list[dict]:
    """A stand-in liger_kernel in ``sys.modules`` whose Function has ``forward``'s signature and reports
    ``version``; returns the list into which its ``apply`` records each call's arguments by name."""
    calls = []

    class Function:
        @staticmethod
        def apply(*args):
            calls.append(inspect.signature(forward).bind(None, *args).arguments)
            return losses, None, None, None

    Function.forward = staticmethod(forward)
    names = ("liger_kernel", "liger_kernel.ops", "liger_kernel.ops.fused_linear_cross_entropy")
    for name in names:
        monkeypatch.setitem(sys.modules, name, type(sys)(name))
    sys.modules[names[-1]].LigerFusedLinearCrossEntropyFunction = Function
    real_version = importlib.metadata.version

    def installed(name):
        if name != "liger-kernel":
            return real_version(name)
        if version is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return version

    monkeypatch.setattr(importlib.metadata, "version", installed)
    return calls


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_the_liger_head_asks_for_fp32_accumulation_in_its_own_argument(monkeypatch, softcap):
    torch.manual_seed(0)
    losses = torch.rand(5, dtype=torch.bfloat16)  # stand-in losses in bf16: the log-probs come back fp32
    calls = stand_in_liger(monkeypatch, losses=losses)
    head = torch.nn.Linear(8, 11, bias=True)
    hidden, targets = torch.randn(5, 8), torch.randint(0, 11, (5,))
    logps = token_logps_from_hidden(hidden, head, targets, 2, LogitTransform(softcap=softcap), kernel="liger")
    assert logps.dtype == torch.float32
    torch.testing.assert_close(logps, -losses.float(), rtol=0, atol=0)
    (call,) = calls
    assert call.pop("ctx") is None
    for name, value in {"_input": hidden, "weight": head.weight, "target": targets, "bias": head.bias}.items():
        assert call.pop(name) is value, name
    assert call == {"ce_weight": None, "ignore_index": -100, "lse_square_scale": 0.0, "label_smoothing": 0.0,
                    "reduction": "none", "softcap": softcap, "return_z_loss": False,
                    "accum_dtype": torch.float32}  # fmt: skip


@pytest.mark.parametrize(
    ("forward", "version"),
    [(forward_0_6_1, "0.6.1"), (forward_0_6_1, None), (forward_0_8_5, "0.8.1"), (forward_0_8_5, "0.6.2")],
)
def test_a_liger_kernel_without_fp32_accumulation_or_per_token_gradients_is_refused(monkeypatch, forward, version):
    """``accum_dtype`` came in 0.6.2; the per-token upstream gradient folded in before the weight gradient's sum
    (``reduction="none"``) in 0.8.2: before it, any per-token weighting gave a wrong weight gradient."""
    stand_in_liger(monkeypatch, forward, version)
    found = version or "an unknown version"
    with pytest.raises(UserError, match=rf"needs liger-kernel >= 0\.8\.2 .*, found {found}") as refused:
        check_kernel("liger", LogitTransform(), "cuda")
    assert "\n" not in str(refused.value)


def test_liger_kernel_0_8_5_is_accepted(monkeypatch):
    stand_in_liger(monkeypatch)
    check_kernel("liger", LogitTransform(softcap=30.0), "cuda")
    stand_in_liger(monkeypatch, version=None)  # no distribution metadata: its forward's signature decides
    check_kernel("liger", LogitTransform(), "cuda")


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETED else "cpu"


@pytest.mark.skipif(
    importlib.util.find_spec("liger_kernel") is None or not (torch.cuda.is_available() or INTERPRETED),
    reason="needs liger-kernel and a CUDA GPU, or Triton's CPU interpreter (TRITON_INTERPRET=1) with liger-kernel",
)
def test_the_liger_head_gives_the_chunked_heads_gradients_at_fp32_accumulation_precision():
    """Liger's weight gradient, summed over its token chunks in fp32 (``accum_dtype``), is the chunked head's (fp32
    across chunks) up to the few bf16 roundings each makes per term; summed in bf16 it is not.

    Tolerance. One bf16 rounding errs by half a step, 2^-9 to 2^-8 of the value, uniformly: a relative rms of
    u ~ 1.6e-3. Take a weight row whose gradient sums many comparable per-token terms: a vocabulary entry no token
    targets, with logits ~N(0, 0.5^2) so that no token's probability dominates. The two heads' difference there
    carries about 8 independent roundings per term (Liger: the logit gradient stored in bf16, the upstream gradient
    cast to bf16, their product, each chunk's product, the result; the chunked head: its logit gradient, each chunk's
    product, the result), random in sign across terms: a relative error of about sqrt(8) u ~ 4.5e-3 per row. Summed
    in bf16, the running sum is rounded once per chunk too: C = 128 chunks here (Liger keeps a chunk's logits near
    the size of the hidden states, so at V / H = 128 a chunk is one token), at a magnitude that grows as
    sqrt(c / C) |grad|: C / 2 more roundings, about sqrt(72) u ~ 1.4e-2. The median over those rows must stay under
    2^-7 ~ 7.8e-3, between the two (measured in Triton's CPU interpreter, seeds 0 to 2: 4.7e-3 to 5.3e-3 with fp32
    accumulation, 1.28e-2 to 1.33e-2 without); the test checks that the bf16 sum is outside it. grad_hidden
    has no sum across chunks (one matmul per token), so ``accum_dtype`` does not touch it: its per-token error is the
    logit gradient's roundings only.
    """
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction

    torch.manual_seed(0)
    tokens, hidden_size, vocab = 128, 32, 4096
    head = torch.nn.Linear(hidden_size, vocab, bias=False, device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden_size) * 0.5 / hidden_size**0.5)  # logits ~N(0, 0.5^2)
    hidden = torch.randn(tokens, hidden_size, device=DEVICE).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), device=DEVICE)
    upstream = torch.rand(tokens, device=DEVICE) * 2 - 0.5  # per-token weights, some negative
    results = {}
    for kernel in ("chunked", "liger"):
        logps = token_logps_from_hidden(hidden, head, targets, 16, kernel=kernel)
        (logps * upstream).sum().backward()
        results[kernel] = logps.detach(), hidden.grad.float(), head.weight.grad.float()
        hidden.grad, head.weight.grad = None, None
    (logps, grad_hidden, grad_weight), (want_logps, want_hidden, want_weight) = results["liger"], results["chunked"]
    weight = head.weight.detach().requires_grad_()
    losses = LigerFusedLinearCrossEntropyFunction.apply(hidden.detach(), weight, targets, None, None, -100, 0.0, 0.0,
                                                        "none", None, False, None)[0]  # fmt: skip
    (-losses * upstream).sum().backward()  # the same, summed in bf16 (accum_dtype None)

    def row_errors(got, want):
        return (got - want).norm(dim=1) / want.norm(dim=1)

    untargeted = torch.ones(vocab, dtype=torch.bool, device=DEVICE)
    untargeted[targets] = False
    # both round the same bf16 logits (a matmul of another shape may round a logit to its neighbour: 2^-7 at |z| < 2)
    torch.testing.assert_close(logps, want_logps, rtol=0, atol=2**-7)
    assert row_errors(grad_hidden, want_hidden).max() < 2**-6
    assert row_errors(grad_weight, want_weight).max() < 2**-5  # any row: nothing grossly off
    assert row_errors(grad_weight, want_weight)[untargeted].median() < 2**-7
    assert row_errors(weight.grad.float(), want_weight)[untargeted].median() > 2**-7  # a bf16 sum: outside it
