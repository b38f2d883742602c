"""Summed response log-probs of every sequence in a collated batch: the only model output the losses need.

    log pi(y|x) = sum_t log pi(y_t | x, y_<t)

The model runs its decoder only; the response tokens of the collator's table (``amapo.data.collator``) go
through the LM head in chunks (``amapo.train.lm_head``), so neither the [rows, T, vocab] logits nor their fp32
log-softmax ever exist, and prompt and padding positions never reach the head.

This runs *inside* the model's forward, patched in by ``enable_response_logps`` (as TRL's
``add_fused_lm_head`` does), so that DDP, FSDP and DeepSpeed see an ordinary forward call of the wrapped model
and gather/reduce parameters as usual; with the keyword absent the forward is the original one (generation and
saving are unchanged). PEFT wraps the patched model and passes the keyword through.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch

from amapo.train.lm_head import LogitTransform, chunk_size_for, token_logps_from_hidden

PATCH_MARK = "_amapo_response_logps"


@dataclass
class ResponseTargets:
    """Which hidden states predict which response tokens: flat positions into [R * T], token ids."""

    positions: torch.Tensor
    ids: torch.Tensor


def causal_lm_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside DDP / FSDP (``.module``) and PEFT (``get_base_model``) wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def enable_response_logps(model: torch.nn.Module, chunk_tokens: int = 0) -> torch.nn.Module:
    """Let ``model(..., response_targets=ResponseTargets)`` return fp32 per-token log-probs [M] (idempotent).

    ``chunk_tokens``: tokens per LM-head chunk; 0 = as many as keep a chunk's fp32 logits under 128 MiB.
    """
    lm = causal_lm_of(model)
    if getattr(lm, PATCH_MARK, None) is not None:
        setattr(lm, PATCH_MARK, chunk_tokens)
        return model
    original_forward = lm.forward
    transform = LogitTransform.of(lm.config)

    @functools.wraps(type(lm).forward)
    def forward(self, *args, response_targets: ResponseTargets | None = None, **kwargs):
        if response_targets is None:
            return original_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state  # the decoder, final norm included
        lm_head = self.get_output_embeddings()
        vocab = self.config.get_text_config().vocab_size
        chunk = chunk_size_for(vocab, getattr(self, PATCH_MARK))
        hidden = hidden.reshape(-1, hidden.shape[-1])[response_targets.positions]
        return token_logps_from_hidden(hidden, lm_head, response_targets.ids, chunk, transform)

    lm.forward = types.MethodType(forward, lm)
    setattr(lm, PATCH_MARK, chunk_tokens)
    return model


def layout_for(requested: str, attention: str | None, sliding_window: int | None, max_length: int) -> str:
    """The collator layout: ``requested``, or for ``auto`` the fastest one the model's attention computes exactly.

    ``attention``: the model's attention implementation (None: transformers' default, sdpa or eager).
    shared_prompt needs an attention that takes a custom 4D mask (eager, sdpa) and no sliding window shorter than
    a sequence (the custom mask replaces the window); packed needs flash-attention's varlen kernels for speed
    (eager and sdpa build a dense block mask over the whole packed row); padded works everywhere.
    """
    attention = attention or "sdpa"
    masked = attention in ("eager", "sdpa")
    windowed = sliding_window is not None and sliding_window < max_length
    if requested == "shared_prompt" and (not masked or windowed):
        why = f"attention is {attention!r}" if not masked else f"sliding window {sliding_window} < max_length"
        raise ValueError(f"batch_layout=shared_prompt needs eager or sdpa attention and no sliding window ({why})")
    if requested != "auto":
        return requested
    if "flash" in attention:
        return "packed"
    return "shared_prompt" if masked and not windowed else "padded"


def layout_of_model(requested: str, model: torch.nn.Module) -> str:
    """``layout_for`` with the attention and sliding window read off a loaded model (padded if not a HF model).

    Sequence lengths are not known here, so any sliding window counts as shorter than a sequence.
    """
    config = getattr(causal_lm_of(model), "config", None)
    if config is None:
        return "padded" if requested == "auto" else requested
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    return layout_for(requested, config._attn_implementation, window, max_length=window + 1 if window else 0)


def model_inputs(batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor | None]:
    """input_ids, position_ids and the attention mask of the batch's layout."""
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    if "segment_ids" in batch:
        inputs["attention_mask"] = shared_prompt_mask(batch["segment_ids"], dtype)
    else:  # padded: the 2D mask; packed: none, the position ids mark the sequences
        inputs["attention_mask"] = batch.get("attention_mask")
    return inputs


def shared_prompt_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, T, T] mask for prompt + chosen + rejected rows (segments 1, 2, 3; 0 = padding).

    Causal over real tokens, except that a rejected token never sees a chosen one. Every query keeps at least
    itself, so padding rows have no empty softmax (their outputs are never read).
    """
    t = segment_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = causal & (segment_ids != 0)[:, None, :]
    allowed &= ~((segment_ids == 3)[:, :, None] & (segment_ids == 2)[:, None, :])
    allowed |= torch.eye(t, dtype=torch.bool, device=segment_ids.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


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
        per_token = model(**model_inputs(batch, dtype), response_targets=targets)
    summed = per_token.new_zeros(lengths.shape[0]).index_add(0, batch["target_owner"], per_token)
    return summed, lengths


def plain_token_logps(
    model, batch: dict[str, torch.Tensor], targets: ResponseTargets, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The reference computation: full logits, fp32 log-softmax per row, gathered at the table's positions."""
    logits = model(**model_inputs(batch, dtype), use_cache=False).logits
    rows = [torch.log_softmax(row.float(), dim=-1) for row in logits]  # fp32 for one row at a time
    flat = torch.cat(rows).reshape(-1, logits.shape[-1])
    return flat[targets.positions].gather(-1, targets.ids[:, None]).squeeze(-1)
