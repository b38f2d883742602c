"""Token log-probs straight from hidden states, through the LM head in chunks of tokens.

    log pi(y_t | x, y_<t) = z_t[y_t] - logsumexp(z_t),   z_t = transform(W h_t + b)

Only the positions whose next token is scored (response tokens) go through the head at all, and at most
``chunk_tokens`` of them at a time, forward and backward, so neither the [tokens, vocab] logits nor their fp32
log-softmax ever exist whole. At vocabulary 128k, a 4k-token response already has 2 GB of fp32 logits; chunking by
pair (Liger-Kernel) would still hold them (issue 7).

Three routes, same numbers (tested against the plain full-logits computation):

* a plain ``nn.Linear`` head (tied or untied): ``ChunkedTokenLogps``, a custom autograd function. Forward saves
  only the hidden states and one logsumexp per token. Backward recomputes each chunk's logits and forms
  dL/dz = g * (onehot(y) - softmax(z)). If the head is frozen (LoRA) the forward already forms dlogp/dh per token,
  so there is no recompute at all.
* an ``nn.Linear`` head whose parameters a sharding engine gathers around each call of the module (DeepSpeed
  ZeRO-3, or FSDP2 / FSDP1 with the head as its own unit): the same function, run as the module's forward for one
  call. The engine gathers the weight once for the forward and once for the backward, and every rank issues the
  same collectives whatever its number of response tokens (none included). Calling the head once per chunk
  instead made ranks with different token counts issue different numbers of all-gathers: a collective mismatch
  (a crash on gloo, a hang on NCCL; issue 13).
* any other head (a PEFT-wrapped or quantized head): each chunk under activation checkpointing, through the
  module itself. If the head holds sharded parameters, the ranks first agree on the number of chunks (the
  largest), so that they call it, and gather its parameters, equally often.

Logit transforms: Gemma's final soft-capping and the logit multipliers some families apply after the head are
read from the config as TRL's ``add_fused_lm_head`` reads them (``trl/trainer/utils.py``), so the numbers equal
the model's own forward.

Kernels for the first two routes (``--lm_head_kernel``; the third always goes through the module):

* ``chunked`` (default): each chunk's logits, log-softmax and gradient as separate PyTorch operations;
* ``compiled``: the same per-chunk functions through ``torch.compile`` (dynamic shapes, compiled once), which fuses
  the elementwise work around the two matmuls: one pass over a chunk's [tokens, vocab] logits instead of several;
* ``liger``: Liger-Kernel's ``LigerFusedLinearCrossEntropyFunction`` with ``reduction="none"`` (per-token
  -log p; since 0.8.2 its backward folds each token's own upstream gradient in before the weight gradient is
  summed, so any per-token weighting is exact), its weight gradient summed in fp32 (``accum_dtype``) like the
  chunked head's. CUDA only (Triton), soft-capping supported, a logit multiplier not (refused by
  ``check_kernel``, as is a liger-kernel older than 0.8.2).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from amapo.distributed import largest_across_ranks

DEFAULT_CHUNK_BYTES = 128 * 2**20  # fp32 logits per chunk (a chunk works in this one buffer); larger: no faster on CPU


@dataclass(frozen=True)
class LogitTransform:
    """z = softcap * tanh(scale * logits / softcap), or scale * logits without soft-capping."""

    scale: float = 1.0
    softcap: float | None = None

    @classmethod
    def of(cls, config) -> LogitTransform:
        """The model family's post-head transform, read from its (text) config as TRL reads it."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        scale = getattr(text, "logit_scale", None)
        if scale is None:
            scale = getattr(text, "output_multiplier", None)
        if scale is None:
            scale = getattr(text, "lm_head_multiplier", None)
        if scale is None and getattr(text, "logits_scaling", None) is not None:  # Granite divides, HyperCLOVA X not
            scale = text.logits_scaling if text.model_type == "hyperclovax" else 1 / text.logits_scaling
        return cls(scale=1.0 if scale is None else float(scale), softcap=getattr(text, "final_logit_softcapping", None))

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """z (``logits`` itself where there is nothing to do; else a new buffer, ``logits`` left as they are)."""
        z = logits * self.scale if self.scale != 1.0 else logits
        if not self.softcap:
            return z
        if logits.requires_grad and torch.is_grad_enabled():  # through autograd (a module head): it keeps tanh's output
            return self.softcap * torch.tanh(z / self.softcap)
        z = z.div_(self.softcap) if z is not logits else z / self.softcap  # one new buffer at most
        return z.tanh_().mul_(self.softcap)

    def scale_gradient(self, grad_z: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """dL/dlogits = dL/dz * dz/dlogits, in place in ``grad_z``; soft-capping's factor 1 - tanh^2 is computed in
        ``logits``' buffer (the callers' own, not needed after)."""
        if self.softcap:
            grad_z.mul_(logits.mul_(self.scale).div_(self.softcap).tanh_().square_().neg_().add_(1))
        return grad_z.mul_(self.scale) if self.scale != 1.0 else grad_z


def chunk_size_for(vocab_size: int, chunk_tokens: int = 0) -> int:
    """Tokens per chunk: ``chunk_tokens`` if set, else as many as keep one chunk's fp32 logits under 128 MiB."""
    return chunk_tokens if chunk_tokens > 0 else max(1, DEFAULT_CHUNK_BYTES // (4 * max(vocab_size, 1)))


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    logits = hidden @ weight.t()
    return (logits if bias is None else logits + bias).float()


def chunk_forward(hidden, weight, bias, targets, transform: LogitTransform):
    """One chunk: (log-probs of ``targets``, logsumexp), fp32."""
    z = transform(_chunk_logits(hidden, weight, bias))
    picked = z.gather(-1, targets[:, None]).squeeze(-1)
    lse = _logsumexp_(z)
    return picked - lse, lse


def _logsumexp_(z: torch.Tensor) -> torch.Tensor:
    """``torch.logsumexp(z, -1)`` by its own steps (max, exp of the shifted logits, sum, log, + max), computed in
    ``z``'s buffer, which it overwrites: a chunk holds one [tokens, vocab] buffer instead of three."""
    maxes = z.amax(-1, keepdim=True)
    maxes.masked_fill_(maxes.abs() == float("inf"), 0)
    return z.sub_(maxes).exp_().sum(-1).log_().add_(maxes.squeeze(-1))


def chunk_forward_and_grad(hidden, weight, bias, targets, transform: LogitTransform):
    """One chunk: (log-probs, logsumexp, dlogp/dlogits) from one computation of its logits (a frozen head)."""
    raw = _chunk_logits(hidden, weight, bias)
    z = transform(raw)
    lse = torch.logsumexp(z, dim=-1)
    logps = z.gather(-1, targets[:, None]).squeeze(-1) - lse
    return logps, lse, transform.scale_gradient(_dlogp_dz(z, lse, targets), raw)


def chunk_logit_grad(hidden, weight, bias, targets, logsumexp, grad, transform: LogitTransform):
    """One chunk's dL/dlogits (fp32) for upstream dL/dlogp ``grad`` per token: recomputes the chunk's logits."""
    raw = _chunk_logits(hidden, weight, bias)
    dz = _dlogp_dz(transform(raw), logsumexp, targets).mul_(grad[:, None])
    return transform.scale_gradient(dz, raw)


class ChunkOps:
    """The per-chunk functions, eager (``chunked``) or through ``torch.compile`` (``compiled``), built once."""

    _compiled: ChunkOps | None = None

    def __init__(self, forward, forward_and_grad, logit_grad) -> None:
        self.forward, self.forward_and_grad, self.logit_grad = forward, forward_and_grad, logit_grad

    @classmethod
    def of(cls, kernel: str) -> ChunkOps:
        if kernel != "compiled":
            return EAGER_OPS
        if cls._compiled is None:  # dynamic: one graph for every chunk length (the last chunk is shorter)
            cls._compiled = cls(*(torch.compile(f, dynamic=True) for f in EAGER_FUNCTIONS))
        return cls._compiled


EAGER_FUNCTIONS = (chunk_forward, chunk_forward_and_grad, chunk_logit_grad)
EAGER_OPS = ChunkOps(*EAGER_FUNCTIONS)


class ChunkedTokenLogps(torch.autograd.Function):
    """log softmax(transform(hidden @ weight.T + bias))[targets], chunk by chunk of tokens, in fp32."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_tokens: int, transform: LogitTransform, grads: bool,
                ops: ChunkOps = EAGER_OPS):  # fmt: skip
        n = hidden.shape[0]
        logps = hidden.new_empty(n, dtype=torch.float32)
        logsumexp = hidden.new_empty(n, dtype=torch.float32)
        frozen_head = not (weight.requires_grad or (bias is not None and bias.requires_grad))
        grad_hidden = hidden.new_empty(hidden.shape, dtype=torch.float32) if grads and frozen_head else None
        for start in range(0, n, chunk_tokens):
            rows = slice(start, min(start + chunk_tokens, n))
            if grad_hidden is None:
                logps[rows], logsumexp[rows] = ops.forward(hidden[rows], weight, bias, targets[rows], transform)
            else:  # frozen head: dlogp/dh now, so backward needs no second pass
                logps[rows], logsumexp[rows], dz = ops.forward_and_grad(hidden[rows], weight, bias, targets[rows],
                                                                         transform)  # fmt: skip
                grad_hidden[rows] = dz.to(weight.dtype) @ weight
        ctx.transform, ctx.chunk_tokens, ctx.ops = transform, chunk_tokens, ops
        ctx.save_for_backward(hidden, weight, bias, targets, logsumexp, grad_hidden)
        return logps

    @staticmethod
    def backward(ctx, grad_logps):
        hidden, weight, bias, targets, logsumexp, grad_hidden_per_logp = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        nothing = (None,) * 5
        if grad_hidden_per_logp is not None:
            grad_hidden = grad_hidden_per_logp * grad_logps[:, None] if need_hidden else None
            return (grad_hidden.to(hidden.dtype) if need_hidden else None), None, None, *nothing
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_bias else None
        transform, chunk_tokens, ops = ctx.transform, ctx.chunk_tokens, ctx.ops
        for start in range(0, hidden.shape[0], chunk_tokens):
            rows = slice(start, min(start + chunk_tokens, hidden.shape[0]))
            dz = ops.logit_grad(hidden[rows], weight, bias, targets[rows], logsumexp[rows], grad_logps[rows],
                                transform)  # fmt: skip
            if grad_hidden is not None:
                grad_hidden[rows] = (dz.to(weight.dtype) @ weight).float()
            if grad_weight is not None:  # accumulated in fp32 across chunks (rounding each to bf16 biases it)
                grad_weight += (dz.t().to(hidden.dtype) @ hidden[rows]).float()
            if grad_bias is not None:
                grad_bias += dz.sum(0)
            del dz  # before the next chunk's logits exist
        return (
            None if grad_hidden is None else grad_hidden.to(hidden.dtype),
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            *nothing,
        )


def _dlogp_dz(z: torch.Tensor, logsumexp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d log softmax(z)[y] / dz = onehot(y) - softmax(z), written into ``z``'s buffer (the callers' own, not needed
    after: a chunk's backward holds one [tokens, vocab] buffer, not three)."""
    grad = z.sub_(logsumexp[:, None]).exp_().neg_()
    grad.scatter_add_(-1, targets[:, None], torch.ones_like(targets[:, None], dtype=grad.dtype))
    return grad


def _module_chunk_logps(
    lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, transform: LogitTransform
) -> torch.Tensor:
    z = transform(lm_head(hidden).float())
    return z.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)


def _is_fsdp1_unit(module: torch.nn.Module) -> bool:
    return type(module).__name__ == "FullyShardedDataParallel" and hasattr(module, "_fsdp_wrapped_module")


def _is_fsdp2_unit(module: torch.nn.Module) -> bool:
    fsdp_module = getattr(torch.distributed.fsdp, "FSDPModule", None) if torch.distributed.is_available() else None
    return fsdp_module is not None and isinstance(module, fsdp_module)


def _is_sharded(param: torch.Tensor) -> bool:
    """A DeepSpeed ZeRO-3 partition or an FSDP2 shard (a DTensor)."""
    return getattr(param, "ds_id", None) is not None or type(param).__name__ == "DTensor"


def _gathers_on_call(module: torch.nn.Module) -> bool:
    """Whether calling ``module`` issues collectives: an FSDP unit, or parameters that ZeRO-3 / FSDP2 shard."""
    return _is_fsdp1_unit(module) or _is_fsdp2_unit(module) or any(_is_sharded(p) for p in module.parameters())


def head_route(lm_head: torch.nn.Module) -> str:
    """How ``token_logps_from_hidden`` reaches the head's weight (see the module docstring).

    ``fused``: a plain ``nn.Linear`` with plain parameters; ``gathered``: an ``nn.Linear`` whose parameters DeepSpeed
    ZeRO-3 or FSDP (the head its own unit) gathers around each call; ``module``: anything else.
    """
    if _is_fsdp1_unit(lm_head):
        return "gathered" if isinstance(lm_head._fsdp_wrapped_module, torch.nn.Linear) else "module"
    if not isinstance(lm_head, torch.nn.Linear) or lm_head.weight.dim() != 2:
        return "module"  # PEFT LoRA, quantized or otherwise wrapped heads
    if (
        type(lm_head) is torch.nn.Linear
        and type(lm_head.weight) is torch.nn.Parameter
        and not _is_sharded(lm_head.weight)
    ):
        return "fused"
    if _is_fsdp2_unit(lm_head) or getattr(lm_head.weight, "ds_id", None) is not None:
        return "gathered"
    if _is_sharded(lm_head.weight):  # an FSDP2 shard that the head's own call would not gather
        raise RuntimeError(
            "the LM head's weight is sharded by FSDP2 but the head is not an FSDP unit of its own (tied "
            "embeddings wrapped apart from the head?): keep the head and the embeddings in one unit, e.g. the root"
        )
    return "module"


def token_logps_from_hidden(
    hidden: torch.Tensor,
    lm_head: torch.nn.Module,
    targets: torch.Tensor,
    chunk_tokens: int,
    transform: LogitTransform = LogitTransform(),
    kernel: str = "chunked",
) -> torch.Tensor:
    """log pi(targets[i] | hidden[i]) for hidden [M, H] and targets [M]: fp32 [M], never holding [M, V] logits.

    M may be 0 (a rank whose micro-batch has no response token): the head is still called, and gets a zero
    gradient, so that data-parallel and sharded engines see the same calls on every rank. ``kernel``: chunked,
    compiled or liger (the module docstring).
    """
    route = head_route(lm_head)
    if route == "fused":
        return _fused(lm_head, hidden, targets, chunk_tokens, transform, kernel)
    if route == "gathered":
        return _fused_in_one_call(lm_head, hidden, targets, chunk_tokens, transform, kernel)
    chunks = max(1, -(-hidden.shape[0] // chunk_tokens))
    if _gathers_on_call(lm_head):
        chunks = largest_across_ranks(chunks)  # every rank gathers the head's parameters equally often
    return torch.cat(
        [
            checkpoint(
                _module_chunk_logps,
                lm_head,
                hidden[i * chunk_tokens : (i + 1) * chunk_tokens],  # empty past this rank's tokens
                targets[i * chunk_tokens : (i + 1) * chunk_tokens],
                transform,
                use_reentrant=False,
            )
            for i in range(chunks)
        ]
    )


def _fused(lm_head, hidden, targets, chunk_tokens, transform, kernel="chunked") -> torch.Tensor:
    if kernel == "liger" and hidden.shape[0] > 0:
        return _liger_logps(hidden, lm_head.weight, lm_head.bias, targets, transform)
    grads = torch.is_grad_enabled() and hidden.requires_grad
    ops = ChunkOps.of(kernel)
    return ChunkedTokenLogps.apply(hidden, lm_head.weight, lm_head.bias, targets, chunk_tokens, transform, grads, ops)


# LigerFusedLinearCrossEntropyFunction.forward's leading parameters after ctx, as liger-kernel 0.6.2 to 0.8.5 declare
# them: autograd's apply takes them by position, so check_kernel checks that the installed forward has them so.
LIGER_FORWARD_ARGS = ("_input", "weight", "target", "bias", "ce_weight", "ignore_index", "lse_square_scale",
                      "label_smoothing", "reduction", "softcap", "return_z_loss", "accum_dtype")  # fmt: skip
LIGER_MIN_VERSION = (0, 8, 2)  # accum_dtype since 0.6.2; per-token gradients with reduction="none" since 0.8.2


def _liger_logps(hidden, weight, bias, targets, transform) -> torch.Tensor:
    """Per-token log-probs (fp32) from Liger's fused linear cross-entropy: ``reduction="none"`` gives -log p per token.

    ``accum_dtype=torch.float32``: Liger sums the weight (and bias) gradient over its token chunks in fp32, as
    ``ChunkedTokenLogps`` does, and returns it in the weight's dtype; by default it would sum in the weight's dtype,
    rounding the running sum to bf16 once per chunk (a numerics difference, not a kernel one). The argument exists
    since liger-kernel 0.6.2; amapo needs 0.8.2 (``check_kernel``).
    """
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction

    args = {"_input": hidden, "weight": weight, "target": targets, "bias": bias, "ce_weight": None,
            "ignore_index": -100, "lse_square_scale": 0.0, "label_smoothing": 0.0, "reduction": "none",
            "softcap": transform.softcap, "return_z_loss": False, "accum_dtype": torch.float32}  # fmt: skip
    losses = LigerFusedLinearCrossEntropyFunction.apply(*(args[name] for name in LIGER_FORWARD_ARGS))[0]
    return -losses.float()


def check_kernel(kernel: str, transform: LogitTransform, device: torch.device | str | None = None) -> None:
    """Refuse, with the reason, a kernel that cannot compute this model's log-probs here.

    ``liger`` needs liger-kernel >= 0.8.2: ``accum_dtype`` (fp32 weight-gradient sums, ``_liger_logps``) came in
    0.6.2, and the backward of ``reduction="none"`` folds each token's upstream gradient in before the weight
    gradient's sum only since 0.8.2 (before, any per-token weighting gave a wrong weight gradient).
    """
    from amapo.errors import UserError

    if kernel != "liger":
        return
    try:
        from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction
    except ImportError as err:
        raise UserError(f"--lm_head_kernel liger needs liger-kernel (pip install liger-kernel): {err}") from None
    try:
        found = importlib.metadata.version("liger-kernel")
    except importlib.metadata.PackageNotFoundError:
        found = None  # a source tree on the path: its forward's signature decides
    params = tuple(inspect.signature(LigerFusedLinearCrossEntropyFunction.forward).parameters)[1:]
    release = tuple(int(part) for part in re.findall(r"\d+", found or "")[:3])
    if params[: len(LIGER_FORWARD_ARGS)] != LIGER_FORWARD_ARGS or (found and release < LIGER_MIN_VERSION):
        needed = ".".join(map(str, LIGER_MIN_VERSION))
        raise UserError(
            f"--lm_head_kernel liger needs liger-kernel >= {needed} (fp32 gradient sums through accum_dtype, "
            f"per-token gradients with reduction='none'), found {found or 'an unknown version'}: "
            f"pip install 'liger-kernel>={needed}'"
        )
    if transform.scale != 1.0:
        raise UserError(
            f"--lm_head_kernel liger: this model multiplies its logits by {transform.scale:g}, which Liger's fused "
            "cross-entropy does not; use --lm_head_kernel chunked or compiled"
        )
    if device is not None and torch.device(device).type != "cuda":
        raise UserError("--lm_head_kernel liger runs Liger's Triton kernels, which need a CUDA GPU; use chunked")


def _fused_in_one_call(lm_head, hidden, targets, chunk_tokens, transform, kernel="chunked") -> torch.Tensor:
    """``ChunkedTokenLogps`` run as the head's forward for one call: the engine's hooks around the call gather the
    weight (and, in backward, gather it again and reduce-scatter its gradient) exactly as for ``lm_head(hidden)``."""
    linear = lm_head._fsdp_wrapped_module if _is_fsdp1_unit(lm_head) else lm_head
    had_own_forward = "forward" in linear.__dict__
    own_forward = linear.__dict__.get("forward")
    linear.forward = lambda h, t: _fused(linear, h, t, chunk_tokens, transform, kernel)
    try:
        return lm_head(hidden, targets)
    finally:
        if had_own_forward:
            linear.forward = own_forward
        else:
            del linear.forward
