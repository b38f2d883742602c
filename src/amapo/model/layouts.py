"""Batch layouts on the model side: which layout a model computes exactly, and the inputs each layout feeds it.

The collator (``amapo.data.collator``) builds three layouts of the same pairs: ``padded`` (one row per sequence),
``shared_prompt`` (prompt + chosen + rejected in one row, the rejected tokens masked off the chosen ones) and
``packed`` (all sequences in one row, boundaries in the position ids).
"""

from __future__ import annotations

import torch

from amapo.hf_internals import attention_implementation
from amapo.model.wrappers import causal_lm_of

# Attentions that take amapo's own mask for a shared-prompt row: eager and sdpa a dense additive [B, 1, T, T] one,
# flex_attention a BlockMask (FlexAttention skips the masked blocks: no dense mask, a flash-class kernel).
MASKED_ATTENTIONS = ("eager", "sdpa", "flex_attention")


def layout_for(requested: str, attention: str | None, sliding_window: int | None, max_length: int) -> str:
    """The collator layout: ``requested``, or for ``auto`` the fastest one the model's attention computes exactly.

    ``attention``: the model's attention implementation (None: transformers' default, sdpa or eager).
    shared_prompt needs an attention that takes amapo's mask (``MASKED_ATTENTIONS``) and no sliding window shorter
    than a sequence (the custom mask replaces the window); packed needs sequence boundaries read from the position
    ids without a dense mask for speed (flash-attention's varlen kernels, FlexAttention's document mask; eager and
    sdpa build a dense block mask over the whole packed row); padded works everywhere.
    """
    attention = attention or "sdpa"
    masked = attention in MASKED_ATTENTIONS
    windowed = sliding_window is not None and sliding_window < max_length
    if requested == "shared_prompt" and (not masked or windowed):
        why = f"attention is {attention!r}" if not masked else f"sliding window {sliding_window} < max_length"
        raise ValueError(
            f"batch_layout=shared_prompt needs {', '.join(MASKED_ATTENTIONS)} attention and no sliding window ({why})"
        )
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
    return layout_for(requested, attention_implementation(config), window, max_length=window + 1 if window else 0)


def model_inputs(batch: dict[str, torch.Tensor], dtype: torch.dtype, attention: str | None = None) -> dict:
    """input_ids, position_ids and the attention mask of the batch's layout, in the form ``attention`` takes."""
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    if "segment_ids" in batch:
        if attention == "flex_attention":
            inputs["attention_mask"] = shared_prompt_block_mask(batch["segment_ids"])
        else:
            inputs["attention_mask"] = shared_prompt_mask(batch["segment_ids"], dtype)
    else:  # padded: the 2D mask; packed: none, the position ids mark the sequences
        inputs["attention_mask"] = batch.get("attention_mask")
    return inputs


def shared_prompt_allowed(segment_ids: torch.Tensor):
    """mask_mod(b, h, q, kv) of a shared-prompt row: causal over real tokens, a rejected token never sees a chosen
    one, every query sees itself (padding rows then have no empty softmax; their outputs are never read)."""

    def allowed(b, h, q, kv):
        query, key = segment_ids[b, q], segment_ids[b, kv]
        return ((kv <= q) & (key != 0) & ~((query == 3) & (key == 2))) | (q == kv)

    return allowed


def shared_prompt_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, T, T] mask for prompt + chosen + rejected rows (segments 1, 2, 3; 0 = padding), for eager and
    sdpa attention (``shared_prompt_allowed`` for every query and key)."""
    b, t = segment_ids.shape
    index = torch.arange(t, device=segment_ids.device)
    rows = torch.arange(b, device=segment_ids.device)[:, None, None]
    allowed = shared_prompt_allowed(segment_ids)(rows, None, index[None, :, None], index[None, None, :])
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def shared_prompt_block_mask(segment_ids: torch.Tensor):
    """The same mask as a FlexAttention ``BlockMask``: blocks that no query of theirs may see are skipped, and no
    [B, T, T] tensor is kept (transformers passes a BlockMask given as the attention mask straight to flex)."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, t = segment_ids.shape
    return create_block_mask(shared_prompt_allowed(segment_ids), b, None, t, t, device=segment_ids.device)
