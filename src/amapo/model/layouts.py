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


def shared_prompt_block_mask(segment_ids: torch.Tensor, block_size: int = 128):
    """The same mask as a FlexAttention ``BlockMask`` (``mask_mod`` = ``shared_prompt_allowed``), built from
    block-level facts in O(B x T + B x (T / block_size)^2) memory (transformers passes a BlockMask given as the
    attention mask straight to flex; flex skips the empty blocks and runs no mask_mod on the full ones).

    Not ``create_block_mask``: without compile it evaluates the mask_mod densely over B x T x T (about 13 GiB of
    temporaries at B = 8, T = 12k), and compiling it costs a start-up per new shape. Here each (query block, key
    block) pair is classified exactly, for any segment ids in {0, 1, 2, 3}: below the diagonal every key precedes
    every query, so the pair's mask is (key != 0) & ~(query == 3 & key == 2) and factorizes into what each block
    holds; diagonal blocks are partial (q == kv allowed, kv > q not); blocks above it are empty. A block that runs
    past T is never full, as in ``create_block_mask``, whose block structure this equals (tests/test_block_mask.py).
    """
    from torch.nn.attention.flex_attention import BlockMask

    b, t = segment_ids.shape
    n = -(-t // block_size)
    # -1 marks the positions past T in the last block: no query or key, never part of a full block
    blocks = torch.nn.functional.pad(segment_ids, (0, n * block_size - t), value=-1).reshape(b, n, block_size)
    in_range = (blocks != -1).all(-1)
    chosen = (blocks == 2).any(-1)
    any_rejected = (blocks == 3).any(-1)
    only_rejected = ((blocks == 3) | (blocks == -1)).all(-1)
    seen_by_all = ((blocks == 1) | (blocks == 3)).any(-1)  # a prompt or rejected key: every later query sees it
    no_padding = (blocks > 0).all(-1)

    q, kv = (slice(None), slice(None), None), (slice(None), None, slice(None))  # [B, n_q, n_kv] broadcasting
    below = torch.ones(n, n, dtype=torch.bool, device=segment_ids.device).tril(-1)
    some = below & (seen_by_all[kv] | (chosen[kv] & ~only_rejected[q]))
    full = some & no_padding[kv] & in_range[q] & ~(any_rejected[q] & chosen[kv])
    partial = (some & ~full) | torch.eye(n, dtype=torch.bool, device=segment_ids.device)
    return BlockMask.from_kv_blocks(
        *_ordered_blocks(partial),
        *_ordered_blocks(full),
        BLOCK_SIZE=block_size,
        mask_mod=shared_prompt_allowed(segment_ids),
        seq_lengths=(t, t),
    )


def _ordered_blocks(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, n_q, n_kv] bool -> BlockMask's (num_blocks [B, 1, n_q], indices [B, 1, n_q, n_kv]) int32: each query
    block's key blocks first, in ascending order (the rest of the indices row is ignored)."""
    blocks = blocks[:, None].to(torch.int32)
    indices = torch.argsort(blocks, dim=-1, descending=True, stable=True)
    return blocks.sum(-1, dtype=torch.int32), indices.to(torch.int32)
