"""``--lean_activations`` (amapo.model.lean_activations): the same forward bit for bit, the same gradients up to
float rounding, and fewer bytes kept for backward."""

import contextlib
import logging

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from amapo.model.lean_activations import RecomputedActivations, apply_lean_activations, recomputable


def tiny_llama(dtype=torch.float32, hidden=64, intermediate=172, layers=2):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():  # norms away from 1, so that their weight's gradient is not trivially tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def loss_and_grads(model, ids):
    model.zero_grad()
    logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_same_forward_bit_for_bit_and_gradients_to_rounding(dtype, rtol):
    ids = torch.randint(0, 97, (3, 17), generator=torch.Generator().manual_seed(1))
    reference = tiny_llama(dtype)
    lean = tiny_llama(dtype)
    assert apply_lean_activations(lean) == {"LlamaRMSNorm": 5, "LlamaMLP": 2}
    logits_ref, grads_ref = loss_and_grads(reference, ids)
    logits_lean, grads_lean = loss_and_grads(lean, ids)
    assert torch.equal(logits_ref, logits_lean)
    for name, g in grads_ref.items():
        scale = g.float().abs().max().clamp_min(1e-12)
        err = (grads_lean[name].float() - g.float()).abs().max() / scale
        assert err <= rtol, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_mlp_gradients_are_autograds_bit_for_bit(dtype):
    """SwiGLU's backward runs autograd's own ops on the same operands: not one bit differs."""
    mlp = tiny_llama(dtype).model.layers[0].mlp
    x = torch.randn(3, 17, 64, generator=torch.Generator().manual_seed(3)).to(dtype).requires_grad_()
    grads = []
    for patch in (False, True):
        if patch:
            apply_lean_activations(mlp)
        mlp.zero_grad()
        x.grad = None
        (mlp(x).float() ** 2).sum().backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in mlp.parameters())])
    assert "forward" in vars(mlp)
    for before, after in zip(*grads, strict=True):
        assert torch.equal(before, after)


def saved_bytes(model, ids, recompute: bool = False) -> int:
    """Bytes of the distinct storages kept for backward by a forward of ``model``'s decoder (with the recomputed
    activations: what ``RecomputedActivations`` keeps, its recipes' inputs being kept anyway)."""
    seen, total = set(), 0

    def count(t):
        nonlocal total
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()

    class Counted(RecomputedActivations):
        @classmethod
        def pack(cls, t):
            packed = super().pack(t)
            if isinstance(packed, torch.Tensor):
                count(packed)
            return packed

    def pack(t):
        count(t)
        return t

    hooks = Counted() if recompute else torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with hooks:
        model.model(input_ids=ids)
    return total


def test_fewer_bytes_kept_for_backward():
    """The norms keep their input and rstd, the MLP gate and up: per token and layer 2 x hidden + intermediate
    elements fewer (the normalized x of two norms, silu(gate)), a fifth of what the layer kept."""
    hidden, intermediate, layers, tokens = 64, 172, 2, 2 * 128
    ids = torch.randint(0, 97, (2, 128), generator=torch.Generator().manual_seed(2))
    model = tiny_llama(hidden=hidden, intermediate=intermediate, layers=layers)
    before = saved_bytes(model, ids)
    apply_lean_activations(model)
    after = saved_bytes(model, ids)
    per_layer = (2 * hidden + intermediate) * 4 * tokens * layers
    final_norm = hidden * 4 * tokens  # the last norm's normalized x
    assert before - after == pytest.approx(per_layer + final_norm, rel=0.01)
    assert after <= 0.85 * before


class OtherRMSNorm(nn.Module):  # another formula under a known name: (1 + weight), as Gemma's
    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width))
        self.variance_epsilon = 1e-6

    def forward(self, x):
        return (1 + self.weight) * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


def test_a_known_name_with_another_formula_keeps_its_own(caplog):
    LlamaRMSNorm = type("LlamaRMSNorm", (OtherRMSNorm,), {})
    model = nn.Sequential(LlamaRMSNorm(8), nn.Linear(8, 8), LlamaRMSNorm(8))
    with caplog.at_level(logging.WARNING, logger="amapo.model.lean_activations"):
        assert apply_lean_activations(model) == {}
    assert "LlamaRMSNorm's output differs" in caplog.text
    assert "forward" not in vars(model[0]) and "forward" not in vars(model[2])


def test_unknown_modules_are_left_alone():
    model = nn.Sequential(nn.Linear(4, 4), nn.SiLU(), nn.LayerNorm(4))
    assert apply_lean_activations(model) == {}
    assert all("forward" not in vars(m) for m in model)


def test_recomputed_norm_outputs_and_product_are_not_kept_and_give_the_same_gradients_bit_for_bit():
    """Under ``RecomputedActivations`` the linears' inputs that are a lean norm's output or the SwiGLU product are
    rebuilt in backward: per token and layer 2 x hidden + intermediate elements fewer again, and the gradients are
    the very bits of the lean modules without it (the same ops recompute the same values)."""
    hidden, intermediate, layers, tokens = 64, 172, 2, 2 * 128
    ids = torch.randint(0, 97, (2, 128), generator=torch.Generator().manual_seed(2))
    model = tiny_llama(hidden=hidden, intermediate=intermediate, layers=layers)
    apply_lean_activations(model)
    lean = saved_bytes(model, ids)
    recomputed = saved_bytes(model, ids, recompute=True)
    assert lean - recomputed == pytest.approx((2 * hidden + intermediate) * 4 * tokens * layers, rel=0.01)
    assert not RecomputedActivations._recipes  # nothing outlives the forward

    def grads(recompute: bool):
        model.zero_grad()
        with RecomputedActivations() if recompute else contextlib.nullcontext():
            hidden_states = model.model(input_ids=ids).last_hidden_state
        (hidden_states.float() ** 2).mean().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for plain, rebuilt in zip(grads(False), grads(True), strict=True):
        assert torch.equal(plain, rebuilt)


def test_a_registered_output_changed_in_place_is_kept_not_recomputed():
    """The recipe holds only while the output is what it computed: after an in-place change (its version moved)
    the saved tensor is the changed one."""
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(8, 3, requires_grad=True)
    with RecomputedActivations():
        out = x * 2
        recomputable(out, lambda t: t * 2, x)
        out.add_(1)
        y = out @ w
    y.sum().backward()
    torch.testing.assert_close(w.grad, (x.detach() * 2 + 1).sum(0)[:, None].expand(8, 3))
