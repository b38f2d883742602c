"""Fewer activations kept for backward in the RMSNorms and the SwiGLU MLP, on any device (``--lean_activations``).

Autograd keeps what each op of a Llama-style layer needs: an RMSNorm (``weight * (x * rsqrt(mean(x^2) + eps))``)
keeps its input x and the normalized ``x * rstd`` besides the output the next linear keeps; the MLP
(``down(silu(gate) * up)``) keeps gate, silu(gate), up and their product. Liger-Kernel's RMSNorm and SwiGLU kernels
keep only x and rstd, and gate and up, recomputing the rest in backward; they are Triton kernels (CUDA). The
functions here do the same in PyTorch ops, so every device gets it: per token and layer, one hidden-sized tensor
less per norm and one intermediate-sized one less in the MLP (the storages ``saved_tensors_hooks`` sees in a forward
of the benchmark's Llama, hidden 256, MLP 688: 5,849 to 4,585 floats per token and layer, -22%; the count is
``tests/test_lean_activations.py``'s). In amapo's forward (``amapo.model.logps``) ``RecomputedActivations`` goes
further: the norms' outputs and the SwiGLU product, which the next linears keep as their inputs, are rebuilt in
backward from what the lean modules keep (2 x hidden + intermediate fewer again: 4,971 to 3,771 floats per token
and layer there, -24%, at 2 rows of 512 tokens).

Exactness: a patched module's forward runs the same ops in the same order as the module's own, so its output is
bit-identical (checked on every patched class at patch time, where its weights are materialized); backward is the
analytic gradient of the same formula (float rounding apart, as Liger's).

Which modules: the classes in ``RMSNORM_CLASSES`` and ``SWIGLU_MLP_CLASSES``, whose transformers code is Llama's
formula (transformers 5.x); other architectures keep their own modules. A module is patched by giving the
instance a ``forward``: its own hooks (DeepSpeed ZeRO-3's gathering, PEFT's wrapped linears) still run.
"""

from __future__ import annotations

import functools
import logging
import types
import weakref
from typing import ClassVar

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

RMSNORM_CLASSES = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})
SWIGLU_MLP_CLASSES = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})
SILU_CLASSES = frozenset({"SiLUActivation", "SiLU"})  # transformers' ACT2FN["silu"], torch.nn.SiLU


class RMSNormFunction(torch.autograd.Function):
    """``weight * (x_f32 * rstd).to(x.dtype)``, ``rstd = rsqrt(mean(x_f32^2) + eps)`` (Zhang & Sennrich 2019,
    transformers' LlamaRMSNorm op for op); keeps x and rstd. Backward, with n = x_f32 * rstd and g_n the gradient
    reaching n (in fp32)::

        dx = rstd * (g_n - n * mean(g_n * n))      dweight = sum over tokens of g * n.to(x.dtype)
    """

    @staticmethod
    def forward(ctx, x, weight, eps):
        h = x.to(torch.float32)
        rstd = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (h * rstd).to(x.dtype)

    @staticmethod
    def recompute(x, weight, eps):
        """The forward's output again, the same ops in the same order: bit for bit."""
        h = x.to(torch.float32)
        return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        normed = x.to(torch.float32) * rstd
        grad_weight = None
        if ctx.needs_input_grad[1]:
            per_token = grad * normed.to(x.dtype)
            grad_weight = per_token.sum(dim=tuple(range(per_token.dim() - 1))).to(weight.dtype)
            del per_token
        # in place on this function's own temporaries: backward's peak is where every activation is still kept
        grad_normed = (grad * weight).to(torch.float32)
        dot = (grad_normed * normed).mean(-1, keepdim=True)
        grad_x = grad_normed.sub_(normed.mul_(dot)).mul_(rstd)
        return grad_x.to(x.dtype), grad_weight, None


class SiluMulFunction(torch.autograd.Function):
    """``silu(gate) * up`` (SwiGLU, Shazeer 2020); keeps gate and up, and recomputes silu(gate) in backward. Backward
    runs autograd's own ops on the same operands (``mul``'s two products, ``silu_backward``), so its gradients equal
    autograd's bit for bit::

        d up = g * silu(gate)        d gate = silu_backward(g * up, gate) = g * up * s * (1 + gate * (1 - s))
    """

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        grad_up = grad * F.silu(gate) if ctx.needs_input_grad[1] else None
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        return grad_gate, grad_up


def silu_mul(gate, up):
    return F.silu(gate) * up


def lean_rms_norm_forward(self, hidden_states):
    out = RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)
    recomputable(out, RMSNormFunction.recompute, hidden_states, self.weight, self.variance_epsilon)
    return out


def lean_swiglu_forward(self, x):
    gate, up = self.gate_proj(x), self.up_proj(x)
    product = SiluMulFunction.apply(gate, up)
    recomputable(product, silu_mul, gate, up)
    return self.down_proj(product)


class _Recipe:
    """How to rebuild a saved tensor in backward: ``function(*inputs)`` (the inputs are kept for backward anyway),
    then the saved view of it (a linear saves its input flattened to [tokens, features]: a view of the output)."""

    __slots__ = ("function", "inputs", "layout", "view")

    def __init__(self, function, inputs, layout, view):
        self.function, self.inputs, self.layout, self.view = function, inputs, layout, view

    def __call__(self) -> torch.Tensor:
        with torch.no_grad():
            output = self.function(*self.inputs)
        if (output.shape, output.stride(), output.storage_offset()) != self.layout:
            raise RuntimeError(f"lean activations: recomputed {self.layout} as {output.shape}, {output.stride()}")
        return output.as_strided(*self.view)


class RecomputedActivations:
    """While active (``with``), the norms' outputs and the SwiGLU product that the next linears save for backward
    are rebuilt in backward instead of kept (the second half of ``--lean_activations``).

    Each q / k / v and gate / up projection keeps its input, a norm's output (hidden per token), and down_proj keeps
    silu(gate) * up (intermediate per token); the lean norm and MLP keep x and gate, up already, from which those
    are one cheap elementwise op away. A lean forward registers its output with its recipe (``recomputable``); the
    ``saved_tensors_hooks`` pack of a tensor that is such an output or a view of it (its storage, unchanged since:
    the same version) stores the recipe, and unpack runs it and takes the same view: the same ops in the same order,
    so backward reads the same bits (``amapo.model.sequence_rows`` registers the attention output that way too). The
    benchmark's Llama (hidden 256, MLP 688) then keeps 6 + 2 x intermediate / hidden hidden-sized tensors per token
    and layer where the lean modules alone keep 8 + 3 x intermediate / hidden.

    A registry entry lives as long as the output it describes (a weak reference whose callback drops it), so the
    inputs it holds live no longer than the layer that made them; under activation checkpointing (whose own hooks
    pack inside each layer) nothing is kept longer than without this. The norm's weight is copied (hidden floats),
    since a sharded engine frees its gathered parameters after the forward. Not under ``torch.compile`` (hooks break
    dynamo's graph).
    """

    _depth = 0
    _recipes: ClassVar[dict] = {}  # storage pointer -> (weakref output, version, function, inputs)

    def __enter__(self):
        RecomputedActivations._depth += 1
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        RecomputedActivations._depth -= 1
        if RecomputedActivations._depth == 0:
            RecomputedActivations._recipes.clear()

    @classmethod
    def register(cls, output: torch.Tensor, function, *inputs) -> None:
        key = output.untyped_storage().data_ptr()

        def forget(ref, key=key):
            entry = cls._recipes.get(key)
            if entry is not None and entry[0] is ref:
                del cls._recipes[key]

        cls._recipes[key] = (weakref.ref(output, forget), output._version, function, inputs)

    @classmethod
    def pack(cls, tensor: torch.Tensor):
        entry = cls._recipes.get(tensor.untyped_storage().data_ptr()) if cls._recipes else None
        if entry is None:
            return tensor
        output_ref, version, function, inputs = entry
        output = output_ref()
        if output is None or (output.dtype, output.device, version) != (tensor.dtype, tensor.device, tensor._version):
            return tensor
        layout = (output.shape, output.stride(), output.storage_offset())
        return _Recipe(function, inputs, layout, (tensor.shape, tensor.stride(), tensor.storage_offset()))

    @staticmethod
    def unpack(packed):
        return packed() if isinstance(packed, _Recipe) else packed


def recomputable(output: torch.Tensor, function, *inputs) -> None:
    """Register ``output == function(*inputs)`` while ``RecomputedActivations`` is active. The inputs must be kept
    for backward anyway (else the recipe keeps them); a parameter among them is copied (detached)."""
    if RecomputedActivations._depth and output.requires_grad and not torch.compiler.is_compiling():
        copies = {i: t.detach().clone() for i, t in enumerate(inputs) if isinstance(t, torch.nn.Parameter)}
        if copies:
            function = functools.partial(_with_copies, function, copies)
            inputs = tuple(None if i in copies else t for i, t in enumerate(inputs))
        RecomputedActivations.register(output, function, *inputs)


def _with_copies(function, copies: dict, *inputs):
    return function(*(copies.get(i, t) for i, t in enumerate(inputs)))


def _patchable(module) -> types.FunctionType | None:
    name = type(module).__name__
    if name in RMSNORM_CLASSES and hasattr(module, "variance_epsilon"):
        return lean_rms_norm_forward
    if name in SWIGLU_MLP_CLASSES and type(getattr(module, "act_fn", None)).__name__ in SILU_CLASSES:
        return lean_swiglu_forward
    return None


def _same_output(module, lean) -> bool | None:
    """Whether ``lean`` gives the module's own output bit for bit on a random input; None where the weights are
    not materialized (ZeRO-3's partitioned parameters)."""
    params = list(module.parameters())
    if not params or any(p.numel() == 0 or p.is_meta for p in params):
        return None
    p = params[0]
    width = getattr(module, "hidden_size", None) or p.shape[-1]
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(2, 3, width, generator=generator).to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        return torch.equal(type(module).forward(module, x), lean(module, x))


def apply_lean_activations(model) -> dict[str, int]:
    """Patch ``model``'s RMSNorms and SwiGLU MLPs of the known classes; returns {class name: modules patched}.
    A class whose output the patch does not reproduce bit for bit (another transformers' code) is left as it is,
    with a warning."""
    patched: dict[str, int] = {}
    refused: set[str] = set()
    for module in model.modules():
        lean = _patchable(module)
        name = type(module).__name__
        if lean is None or name in refused:
            continue
        if name not in patched and _same_output(module, lean) is False:
            refused.add(name)
            logger.warning("--lean_activations: %s's output differs from its lean form; it keeps its own", name)
            continue
        module.forward = types.MethodType(lean, module)
        patched[name] = patched.get(name, 0) + 1
    return patched
