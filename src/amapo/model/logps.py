"""Summed response log-probs of every sequence in a collated batch: the only model output the losses need.

    log pi(y|x) = sum_t log pi(y_t | x, y_<t)

The model runs its decoder only; the response tokens of the collator's table (``amapo.data.collator``) go
through the LM head in chunks (``amapo.model.lm_head``), so neither the [rows, T, vocab] logits nor their fp32
log-softmax ever exist, and prompt and padding positions never reach the head.

This runs *inside* the model's forward, patched in by ``enable_response_logps`` (as TRL's
``add_fused_lm_head`` does), so that DDP, FSDP and DeepSpeed see an ordinary forward call of the wrapped model
and gather/reduce parameters as usual; with the keyword absent the forward is the original one (generation and
saving are unchanged). PEFT wraps the patched model and passes the keyword through. Under ``--torch_compile``
only the decoder is compiled: the head's chunk loop runs outside the graph (``_head_token_logps``), so batches
with other response-token counts reuse one graph instead of recompiling it (issue 34).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
from dataclasses import dataclass

import torch

from amapo.errors import UserError
from amapo.hf_internals import attention_implementation
from amapo.model import sequence_rows
from amapo.model.layouts import model_inputs
from amapo.model.lean_activations import RecomputedActivations
from amapo.model.lm_head import LogitTransform, chunk_size_for, token_logps_from_hidden
from amapo.model.wrappers import causal_lm_of

PATCH_MARK = "_amapo_response_logps"  # tokens per LM-head chunk
KERNEL_MARK = "_amapo_lm_head_kernel"  # chunked, compiled or liger (amapo.model.lm_head)
VERIFIED_MARK = "_amapo_response_logps_verified"
# Families whose causal LM is not "decoder hidden states -> LM head -> logit transform", refused up front. Any other
# misfit shows on the first batch (``verify_fused_logps``).
UNFIT_FAMILIES = {
    "prophetnet": "it predicts n-gram streams, not one next token per position",
    "xlm-prophetnet": "it predicts n-gram streams, not one next token per position",
}
# How far the fused per-token log-probs may be from the plain computation's: the same numbers up to the order of
# the LM head's matmul accumulation (16-bit logits round at about 0.06 around 10); a missing logit transform is off
# by far more.
FUSED_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
FUSED_TOLERANCE_16BIT = 0.15
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")  # precomputed reference log-probs of a dataset


@dataclass
class ResponseTargets:
    """Which hidden states predict which response tokens: flat positions into [R * T], token ids."""

    positions: torch.Tensor
    ids: torch.Tensor


def enable_response_logps(model: torch.nn.Module, chunk_tokens: int = 0, kernel: str = "chunked") -> torch.nn.Module:
    """Let ``model(..., response_targets=ResponseTargets)`` return fp32 per-token log-probs [M] (idempotent).

    ``chunk_tokens``: tokens per LM-head chunk; 0 = as many as keep a chunk's fp32 logits under 128 MiB.
    ``kernel``: how the head's chunks are computed (``amapo.model.lm_head``: chunked, compiled, liger).
    """
    lm = causal_lm_of(model)
    setattr(lm, KERNEL_MARK, kernel)
    if getattr(lm, PATCH_MARK, None) is not None:
        setattr(lm, PATCH_MARK, chunk_tokens)
        return model
    check_fits(lm)
    original_forward = lm.forward
    transform = LogitTransform.of(lm.config)

    @functools.wraps(type(lm).forward)
    def forward(self, *args, response_targets: ResponseTargets | None = None, **kwargs):
        if response_targets is None:
            return original_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        # lean modules' outputs rebuilt in backward, not kept (lean_activations); not in a compiled graph
        with contextlib.nullcontext() if torch.compiler.is_compiling() else RecomputedActivations():
            hidden = self.base_model(*args, **kwargs).last_hidden_state  # the decoder, final norm included
        return _head_token_logps(self, hidden, response_targets, transform)

    lm.forward = types.MethodType(forward, lm)
    setattr(lm, PATCH_MARK, chunk_tokens)
    return model


@torch.compiler.disable
def _head_token_logps(
    lm: torch.nn.Module, hidden: torch.Tensor, targets: ResponseTargets, transform: LogitTransform
) -> torch.Tensor:
    """The response positions of the decoder's ``hidden`` [R, T, H] through the LM head in chunks: fp32 [M].

    Outside any ``torch.compile`` of the model (``--torch_compile``: the Trainer compiles the whole model with
    ``dynamic=None``): traced, the chunk loop and its buffers fix the response-token count M as a constant, so
    every new M recompiled the model, until dynamo's recompile limit (8) left it uncompiled (issue 34). Here the
    compiled graph ends at the decoder's hidden states, whose sizes turn dynamic after their first change, and the
    head runs as amapo's own kernel (``--lm_head_kernel compiled`` compiles its chunks itself, shapes dynamic).
    """
    vocab = lm.config.get_text_config().vocab_size
    chunk = chunk_size_for(vocab, getattr(lm, PATCH_MARK))
    hidden = hidden.reshape(-1, hidden.shape[-1])[targets.positions]
    kernel = getattr(lm, KERNEL_MARK, "chunked")
    return token_logps_from_hidden(hidden, lm.get_output_embeddings(), targets.ids, chunk, transform, kernel)


def check_fits(lm: torch.nn.Module) -> None:
    """Refuse, naming the model class, a model that the patched forward would compute wrongly."""
    config = getattr(lm, "config", None)
    name = type(lm).__name__
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(f"{name} is an encoder-decoder model: amapo trains decoder-only causal LMs")
    reason = UNFIT_FAMILIES.get(getattr(config, "model_type", None))
    if reason:
        raise UserError(f"{name} ({config.model_type}) does not fit amapo's response log-probs: {reason}")
    if lm.get_output_embeddings() is None or not hasattr(lm, "base_model"):
        raise UserError(f"{name} has no LM head (get_output_embeddings() is None): amapo needs a causal LM")


# The self-check's plain logits cover at most this share of one LM-head chunk: its logits, their fp32 copy and
# the picked rows stay below the chunk budget the training step itself works in (``chunk_size_for``).
CHECK_SHARE_OF_CHUNK = 4


@torch.no_grad()
def verify_fused_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """Compare the patched forward's per-token log-probs with the model's own forward on a sample of ``batch``; a
    difference beyond ``FUSED_TOLERANCE`` stops with a message naming the model class (a family whose forward does
    something the patch does not: another logit transform, a scaled hidden state, a second head).

    What it costs is bounded, whatever the vocabulary and length: one row of the batch (cut after its last sampled
    position), and at most a quarter of one LM-head chunk of response positions, spread over that row's response
    (first and last included). The model's own forward projects only those positions (``logits_to_keep``, or its
    head's input sliced where the forward lacks that argument), so neither [rows, T, V] nor [M, V] logits exist.

    Run once per model, on its first batch (``sequence_logps``), in eval mode so that dropout cannot differ. Every
    rank runs it on its own first batch and calls the model twice, so sharded engines see the same calls everywhere.
    """
    lm = causal_lm_of(model)
    vocab = lm.config.get_text_config().vocab_size
    budget = max(1, chunk_size_for(vocab, getattr(lm, PATCH_MARK, 0) or 0) // CHECK_SHARE_OF_CHUNK)
    sample, columns = check_sample(batch, budget)
    inputs = model_inputs(sample, getattr(lm, "dtype", torch.float32), attention_implementation(lm.config))
    ids = sample["target_ids"]
    training = model.training
    model.eval()
    try:
        fused = model(**inputs, response_targets=ResponseTargets(columns, ids))  # one row: flat positions = columns
        sequence_rows.check_used(inputs.get(sequence_rows.KEYWORD), lm)
        logits = _own_logits_at(model, lm, inputs, columns)  # [1, k, V]
    finally:
        model.train(training)
    plain = torch.log_softmax(logits[0].float(), dim=-1).gather(-1, ids[:, None]).squeeze(-1)
    computed_in = logits.dtype  # bf16 under autocast or a sharded engine's mixed precision, whatever ``dtype`` says
    tolerance = FUSED_TOLERANCE.get(computed_in, FUSED_TOLERANCE_16BIT)
    gap = (fused - plain).abs().max().item() if fused.numel() else 0.0
    if not gap <= tolerance:
        raise UserError(
            f"{type(lm).__name__}: amapo's fused response log-probs differ from the model's own forward by up to "
            f"{gap:.3g} (allowed {tolerance:g} in {str(computed_in).removeprefix('torch.')}) on the first batch: "
            "this model family computes its logits in a way amapo's patched forward does not know; please report it"
        )
    setattr(lm, VERIFIED_MARK, True)


def check_sample(batch: dict[str, torch.Tensor], budget: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One row of ``batch`` (the first that holds a response token), cut after the last of up to ``budget`` of its
    response positions, evenly spread; returns that one-row batch (``target_ids`` the sampled tokens) and the
    sampled columns. Any layout: a padded row is a sequence, a shared-prompt row a pair, a packed row everything.
    """
    width = batch["input_ids"].shape[1]
    rows = batch["target_positions"] // width
    row = int(rows[0]) if rows.numel() else 0
    mine = torch.nonzero(rows == row).reshape(-1)
    if mine.numel() > budget:  # evenly spaced, first and last kept
        mine = mine[torch.linspace(0, mine.numel() - 1, budget, device=mine.device).round().long().unique()]
    columns = batch["target_positions"][mine] - row * width
    end = int(columns.max()) + 1 if columns.numel() else 1
    keys = ("input_ids", "position_ids", "attention_mask", "segment_ids")
    # a None kept as None: a padded slice of sequence parallelism has no mask (``model_inputs``: none built)
    sample = {key: None if batch[key] is None else batch[key][row : row + 1, :end] for key in keys if key in batch}
    sample["target_ids"] = batch["target_ids"][mine]
    return sample, columns


def _own_logits_at(model, lm, inputs: dict, columns: torch.Tensor) -> torch.Tensor:
    """The model's own forward, its logits at ``columns`` of the one row only: [1, k, V]."""
    if "logits_to_keep" in inspect.signature(type(lm).forward).parameters:
        return model(**inputs, use_cache=False, logits_to_keep=columns).logits
    # A forward without ``logits_to_keep`` (remote code): slice the head's input [1, T, H], as logits_to_keep would.
    width = inputs["input_ids"].shape[1]

    def keep_columns(module, args, kwargs):
        hidden = args[0]
        if hidden.dim() == 3 and hidden.shape[1] == width:
            return (hidden[:, columns], *args[1:]), kwargs
        return None

    handle = lm.get_output_embeddings().register_forward_pre_hook(keep_columns, with_kwargs=True)
    try:
        logits = model(**inputs, use_cache=False).logits
    finally:
        handle.remove()
    return logits if logits.shape[1] == columns.numel() else logits[:, columns]


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (fp32 [2B]) and response lengths ([2B]) of the batch's 2B sequences.

    The model must have been through ``enable_response_logps``; models that are not transformers causal LMs
    (no patch) get the plain computation from their full logits.
    """
    lengths = batch["response_lengths"].to(torch.float32)
    targets = ResponseTargets(batch["target_positions"], batch["target_ids"])
    lm = causal_lm_of(model)
    dtype = getattr(lm, "dtype", torch.float32)
    if getattr(lm, PATCH_MARK, None) is None:
        per_token = plain_token_logps(model, batch, targets, dtype)
    else:
        if not getattr(lm, VERIFIED_MARK, False):
            verify_fused_logps(model, batch)
        inputs = model_inputs(batch, dtype, attention_implementation(lm.config))
        per_token = model(**inputs, response_targets=targets)
        sequence_rows.check_used(inputs.get(sequence_rows.KEYWORD), lm)
    summed = per_token.new_zeros(lengths.shape[0]).index_add(0, batch["target_owner"], per_token)
    return summed, lengths


def plain_token_logps(
    model, batch: dict[str, torch.Tensor], targets: ResponseTargets, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The reference computation: full logits, fp32 log-softmax per row, gathered at the table's positions."""
    attention = attention_implementation(getattr(causal_lm_of(model), "config", None))
    return _token_logps_of_logits(model(**model_inputs(batch, dtype, attention), use_cache=False).logits, targets)


def _token_logps_of_logits(logits: torch.Tensor, targets: ResponseTargets) -> torch.Tensor:
    rows = [torch.log_softmax(row.float(), dim=-1) for row in logits]  # fp32 for one row at a time
    flat = torch.cat(rows).reshape(-1, logits.shape[-1])
    return flat[targets.positions].gather(-1, targets.ids[:, None]).squeeze(-1)
