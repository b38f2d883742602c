"""Token log-probs straight from hidden states, through the LM head in chunks of tokens.

    log pi(y_t | x, y_<t) = z_t[y_t] - logsumexp(z_t),   z_t = transform(W h_t + b)

Only the positions whose next token is scored (response tokens) go through the head at all, and at most
``chunk_tokens`` of them at a time, forward and backward, so neither the [tokens, vocab] logits nor their fp32
log-softmax ever exist whole. At vocabulary 128k, a 4k-token response already has 2 GB of fp32 logits; chunking by
pair (Liger-Kernel) would still hold them (issue 7).

Two paths, same numbers (tested against the plain full-logits computation):

* a plain ``nn.Linear`` head (tied or untied): ``ChunkedTokenLogps``, a custom autograd function. Forward saves
  only the hidden states and one logsumexp per token. Backward recomputes each chunk's logits and forms
  dL/dz = g * (onehot(y) - softmax(z)). If the head is frozen (LoRA) the forward already forms dlogp/dh per token,
  so there is no recompute at all.
* any other head (a PEFT-wrapped or quantized head, DeepSpeed ZeRO-3 or FSDP2 parameters, which must be used
  through the module): each chunk under activation checkpointing, through the module itself.

Logit transforms: Gemma's final soft-capping and the logit multipliers some families apply after the head are
read from the config as TRL's ``add_fused_lm_head`` reads them (``trl/trainer/utils.py``), so the numbers equal
the model's own forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_BYTES = 128 * 2**20  # fp32 logits per chunk (a chunk works in about 3x this); larger is no faster on CPU


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
        z = logits * self.scale if self.scale != 1.0 else logits
        return self.softcap * torch.tanh(z / self.softcap) if self.softcap else z

    def scale_gradient(self, grad_z: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """dL/dlogits = dL/dz * dz/dlogits, in place in ``grad_z``."""
        if self.softcap:
            grad_z.mul_(1 - torch.tanh(logits * self.scale / self.softcap) ** 2)
        return grad_z.mul_(self.scale) if self.scale != 1.0 else grad_z


def chunk_size_for(vocab_size: int, chunk_tokens: int = 0) -> int:
    """Tokens per chunk: ``chunk_tokens`` if set, else as many as keep one chunk's fp32 logits under 128 MiB."""
    return chunk_tokens if chunk_tokens > 0 else max(1, DEFAULT_CHUNK_BYTES // (4 * max(vocab_size, 1)))


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    logits = hidden @ weight.t()
    return (logits if bias is None else logits + bias).float()


class ChunkedTokenLogps(torch.autograd.Function):
    """log softmax(transform(hidden @ weight.T + bias))[targets], chunk by chunk of tokens, in fp32."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_tokens: int, transform: LogitTransform, grads: bool):
        n = hidden.shape[0]
        logps = hidden.new_empty(n, dtype=torch.float32)
        logsumexp = hidden.new_empty(n, dtype=torch.float32)
        frozen_head = not (weight.requires_grad or (bias is not None and bias.requires_grad))
        grad_hidden = hidden.new_empty(hidden.shape, dtype=torch.float32) if grads and frozen_head else None
        for start in range(0, n, chunk_tokens):
            rows = slice(start, min(start + chunk_tokens, n))
            raw = _chunk_logits(hidden[rows], weight, bias)
            z = transform(raw)
            lse = torch.logsumexp(z, dim=-1)
            logps[rows] = z.gather(-1, targets[rows, None]).squeeze(-1) - lse
            logsumexp[rows] = lse
            if grad_hidden is not None:  # frozen head: dlogp/dh now, so backward needs no second pass
                dz = transform.scale_gradient(_dlogp_dz(z, lse, targets[rows]), raw)
                grad_hidden[rows] = dz.to(weight.dtype) @ weight
        ctx.transform, ctx.chunk_tokens = transform, chunk_tokens
        ctx.save_for_backward(hidden, weight, bias, targets, logsumexp, grad_hidden)
        return logps

    @staticmethod
    def backward(ctx, grad_logps):
        hidden, weight, bias, targets, logsumexp, grad_hidden_per_logp = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        if grad_hidden_per_logp is not None:
            grad_hidden = grad_hidden_per_logp * grad_logps[:, None] if need_hidden else None
            return (grad_hidden.to(hidden.dtype) if need_hidden else None), None, None, None, None, None, None
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_bias else None
        transform, chunk_tokens = ctx.transform, ctx.chunk_tokens
        for start in range(0, hidden.shape[0], chunk_tokens):
            rows = slice(start, min(start + chunk_tokens, hidden.shape[0]))
            raw = _chunk_logits(hidden[rows], weight, bias)
            dz = _dlogp_dz(transform(raw), logsumexp[rows], targets[rows]).mul_(grad_logps[rows, None])
            dz = transform.scale_gradient(dz, raw)  # dL/dlogits for this chunk, fp32
            del raw
            if grad_hidden is not None:
                grad_hidden[rows] = (dz.to(weight.dtype) @ weight).float()
            if grad_weight is not None:  # accumulated in fp32 across chunks (rounding each to bf16 biases it)
                grad_weight += (dz.t().to(hidden.dtype) @ hidden[rows]).float()
            if grad_bias is not None:
                grad_bias += dz.sum(0)
        return (
            None if grad_hidden is None else grad_hidden.to(hidden.dtype),
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
            None,
            None,
            None,
        )


def _dlogp_dz(z: torch.Tensor, logsumexp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d log softmax(z)[y] / dz = onehot(y) - softmax(z), written into softmax's buffer."""
    grad = torch.exp(z - logsumexp[:, None]).neg_()
    grad.scatter_add_(-1, targets[:, None], torch.ones_like(targets[:, None], dtype=grad.dtype))
    return grad


def _module_chunk_logps(
    lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, transform: LogitTransform
) -> torch.Tensor:
    z = transform(lm_head(hidden).float())
    return z.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)


def uses_plain_linear(lm_head: torch.nn.Module) -> bool:
    """Whether the fused path may read the head's weight directly (else: through the module, checkpointed)."""
    if type(lm_head) is not torch.nn.Linear:  # PEFT LoRA, quantized or otherwise wrapped heads
        return False
    if type(lm_head.weight) is not torch.nn.Parameter or lm_head.weight.dim() != 2:  # FSDP2 DTensor, ZeRO-3 shard
        return False
    return getattr(lm_head.weight, "ds_id", None) is None  # DeepSpeed ZeRO-3 gathers only inside module calls


def token_logps_from_hidden(
    hidden: torch.Tensor,
    lm_head: torch.nn.Module,
    targets: torch.Tensor,
    chunk_tokens: int,
    transform: LogitTransform = LogitTransform(),
) -> torch.Tensor:
    """log pi(targets[i] | hidden[i]) for hidden [M, H] and targets [M]: fp32 [M], never holding [M, V] logits."""
    if hidden.shape[0] == 0:
        return hidden.sum(-1).float()  # empty, still connected to the graph
    if uses_plain_linear(lm_head):
        grads = torch.is_grad_enabled() and hidden.requires_grad
        return ChunkedTokenLogps.apply(hidden, lm_head.weight, lm_head.bias, targets, chunk_tokens, transform, grads)
    pieces = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        rows = slice(start, start + chunk_tokens)
        pieces.append(
            checkpoint(_module_chunk_logps, lm_head, hidden[rows], targets[rows], transform, use_reentrant=False)
        )
    return torch.cat(pieces)
