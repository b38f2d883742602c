"""Batch layouts on the model side: which layout a model computes exactly, and the inputs each layout feeds it.

The collator (``amapo.data.collator``) builds three layouts of the same pairs: ``padded`` (one row per sequence),
``shared_prompt`` (prompt + chosen + rejected in one row, the rejected tokens masked off the chosen ones) and
``packed`` (all sequences in one row, boundaries in the position ids).
"""

from __future__ import annotations

import torch

from amapo.hf_internals import attention_implementation
from amapo.model.wrappers import causal_lm_of


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
    return layout_for(requested, attention_implementation(config), window, max_length=window + 1 if window else 0)


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
