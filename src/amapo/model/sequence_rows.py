"""Shared-prompt and packed batches on sdpa without a [rows, 1, T, T] mask: each sequence attends in a row of its own.

A shared-prompt row holds prompt + chosen + rejected, and its rejected tokens must see the prompt but not the chosen
ones: sdpa can be told that only with a dense mask, which grows with the square of the row (issue 35). But attention
is the only operation of a decoder layer that mixes positions; the norms, projections, MLP and LM head work token by
token. So the layer runs on the shared row, and its attention alone regroups the row's queries, keys and values into
the sequences the row holds, here for shared row b with p prompt, c chosen and r rejected tokens::

    sequence row 2b     = prompt + chosen     (columns 0 .. p+c-1 of shared row b)
    sequence row 2b + 1 = prompt + rejected   (columns 0 .. p-1, then p+c .. p+c+r-1)

right-padded to the widest (W = the batch's longest prompt + response). On these rows plain causal attention
(``is_causal``, no mask: the kernel sdpa picks for causal rows) computes exactly the shared-prompt mask: every pad
comes after its row's real tokens, so no real query sees one. The chosen and rejected outputs are read back into
the shared row; the prompt is attended in both rows (the second copy's outputs are dropped, its keys and values get
the gradients of both). What this keeps per layer: [2B, W] copies of q, k, v and sdpa's output, linear in length,
where the mask was B x T^2 (and kept sdpa off its flash kernel); the output read back, which o_proj would keep as
its input, is rebuilt from sdpa's in backward (``amapo.model.lean_activations.RecomputedActivations``).

Packed rows (sequences back to back, positions restarting at 0) regroup the same way, one row per sequence.

How it reaches the attention: ``model_inputs`` passes ``amapo_sequence_rows=SequenceRows`` through the model's
forward keywords (transformers hands them to the attention function of every layer, activation checkpointing
included), and as the attention mask a [rows, 1, 1, 0] placeholder that carries the same rows (for a forward that
drops keywords) and makes transformers build no mask (a 4D mask is taken as given). ``install`` wraps
transformers' registered ``sdpa`` function once: given rows it regroups, otherwise it is the original. An attention
that does not go through that function and reads the mask fails to broadcast the placeholder; one that ignores
masks altogether is caught after the first forward (``SequenceRows.calls``, ``check_used``).
"""

from __future__ import annotations

import torch

from amapo.errors import UserError
from amapo.model.lean_activations import recomputable

KEYWORD = "amapo_sequence_rows"
# attention keywords transformers' own sdpa function handles (soft-capping refused, T5-style biases, sinks): with
# any of them the regrouped rows go through it, not ``_causal_sdpa``
UNCOMMON_KEYWORDS = ("softcap", "position_bias", "s_aux", "sinks")
_WRAPPED_MARK = "_amapo_sequence_rows"


class SequenceRows:
    """Where each sequence of a batch lies: ``gather`` long [V, W], the flat batch position (row x T + column) each
    slot of V sequence rows reads (a pad slot reads its row's first token); ``scatter`` long [R x T], for each
    position of the batch the flat slot (v x W + w) its attention output comes from. ``calls`` counts the attention
    layers that used it."""

    def __init__(self, gather: torch.Tensor, scatter: torch.Tensor, batch_width: int, lone=None):
        self.gather, self.scatter, self.calls = gather, scatter, 0
        # lone positions (a one-token sequence: packed padding, a check sample's cut) attend to themselves only:
        # their output is their own value, set after the read-back
        self.lone = None if lone is None else (lone // batch_width, lone % batch_width, lone)
        # the same as (row, column) pairs, to index [B, heads, T, d] and [V, W, heads, d] views without a copy
        t, width, self.batch_width = batch_width, gather.shape[1], batch_width
        self.gather_at = (gather // t, gather % t)
        self.scatter_at = (scatter // width, scatter % width)

    @classmethod
    def of_shared_prompt(cls, segment_ids: torch.Tensor) -> SequenceRows:
        """The two sequences of each shared-prompt row (segments 1 prompt, 2 chosen, 3 rejected, 0 padding, in
        this order, ``amapo.data.collator``)."""
        b, t = segment_ids.shape
        p, c, r = ((segment_ids == s).sum(1, keepdim=True) for s in (1, 2, 3))
        width = max(1, int((p + torch.maximum(c, r)).max()))
        slot = torch.arange(width, device=segment_ids.device)[None]  # [1, W]
        base = torch.arange(b, device=segment_ids.device)[:, None] * t  # [B, 1]
        chosen = base + torch.where(slot < p + c, slot, 0)
        rejected = base + torch.where(slot < p + r, torch.where(slot < p, slot, slot + c), 0)
        gather = torch.stack((chosen, rejected), 1).reshape(2 * b, width)
        column = torch.arange(t, device=segment_ids.device)[None]  # [1, T]
        is_rejected = segment_ids == 3
        sequence = 2 * torch.arange(b, device=segment_ids.device)[:, None] + is_rejected.long()
        # prompt and chosen sit at their own column of row 2b, rejected c columns left in row 2b + 1; padding
        # (unread) at its column of row 2b, or that row's first slot past W
        slot_of = torch.where(is_rejected, column - c, torch.where(column < width, column, 0))
        return cls(gather, (sequence * width + slot_of).reshape(-1), t)

    @classmethod
    def of_packed(cls, position_ids: torch.Tensor) -> SequenceRows:
        """One row per sequence of packed rows: a sequence starts where its position is 0 and counts up by one
        (every row starts one). A lone position (the padding of ``packed_rows_of_longest``, position 0 each; the
        last token of a cut sample) gets no row of W slots: its output is its own value (``lone``)."""
        flat = position_ids.reshape(-1)
        starts = torch.nonzero(flat == 0).reshape(-1)
        lengths = torch.diff(starts, append=starts.new_tensor([flat.numel()]))
        real = lengths > 1
        starts, lengths = starts[real], lengths[real]
        width = max(1, int(lengths.max())) if lengths.numel() else 1
        slot = torch.arange(width, device=flat.device)[None]
        gather = starts[:, None] + torch.where(slot < lengths[:, None], slot, 0)
        sequence = torch.cumsum((flat == 0) & real.new_zeros(flat.shape).index_fill(0, starts, True), 0) - 1
        scatter = sequence.clamp(min=0) * width + flat.clamp(max=width - 1)
        lone = torch.nonzero((flat == 0) & ~real.new_zeros(flat.shape).index_fill(0, starts, True)).reshape(-1)
        return cls(gather, scatter, position_ids.shape[1], lone if lone.numel() else None)


def install() -> None:
    """Wrap transformers' registered sdpa attention once so that it honours ``amapo_sequence_rows`` (idempotent)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    if getattr(sdpa, _WRAPPED_MARK, False):
        return

    def sdpa_by_sequence(module, query, key, value, attention_mask, *args, **kwargs):
        rows = kwargs.pop(KEYWORD, None) or getattr(attention_mask, KEYWORD, None)
        if rows is None:
            return sdpa(module, query, key, value, attention_mask, *args, **kwargs)
        rows.calls += 1
        heads, lone_values = query.shape[1], None
        if rows.lone is not None:  # [n, heads, d]: each lone position's own value, grouped heads repeated
            lone_values = value[rows.lone[0], :, rows.lone[1]].repeat_interleave(heads // value.shape[1], dim=1)
        b, d = query.shape[0], query.shape[-1]
        query, key, value = (_gather(x, rows) for x in (query, key, value))
        if not len(rows.gather):  # lone positions only
            return value.new_zeros(b * rows.batch_width, heads, d).index_put((rows.lone[2],), lone_values).reshape(
                b, rows.batch_width, heads, d
            ), None
        if args or any(kwargs.get(name) is not None for name in UNCOMMON_KEYWORDS):
            kwargs["is_causal"] = True
            by_slot, weights = sdpa(module, query, key, value, None, *args, **kwargs)  # [V, W, heads, d]
        else:
            by_slot, weights = _causal_sdpa(module, query, key, value, kwargs), None
        out = by_slot[rows.scatter_at]
        if lone_values is not None:
            out = out.index_put((rows.lone[2],), lone_values)
        else:  # o_proj keeps this as its input: rebuilt from sdpa's own output (kept for its backward) in backward
            recomputable(out, _take, by_slot, rows.scatter_at)
        return out.reshape(-1, rows.batch_width, *out.shape[1:]), weights  # [B, T, heads, d], as transformers

    setattr(sdpa_by_sequence, _WRAPPED_MARK, True)
    AttentionInterface.register("sdpa", sdpa_by_sequence)


def _gather(x: torch.Tensor, rows: SequenceRows) -> torch.Tensor:
    """[B, heads, T, d] -> [V, heads, W, d], the sequence rows' slots (one indexing copy)."""
    return x[rows.gather_at[0], :, rows.gather_at[1]].transpose(1, 2)


def _causal_sdpa(module, query, key, value, kwargs) -> torch.Tensor:
    """Causal sdpa over the sequence rows, as transformers' sdpa function computes it without a mask (grouped
    heads through ``enable_gqa`` where its rule allows, repeated otherwise): [V, W, heads, d], a view of the output
    sdpa keeps for its backward (its flash kernels write [V, W, heads, d] and return it transposed)."""
    from transformers.integrations.sdpa_attention import repeat_kv, use_gqa_in_sdpa

    groups = query.shape[1] // key.shape[1]
    gqa = groups > 1 and use_gqa_in_sdpa(None, key, value)
    if groups > 1 and not gqa:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, dropout_p=kwargs.get("dropout", 0.0), scale=kwargs.get("scaling"), is_causal=True,
        enable_gqa=gqa,
    )  # fmt: skip
    return out.transpose(1, 2)


def _take(by_slot: torch.Tensor, at: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return by_slot[at]


def placeholder_mask(rows: SequenceRows, batch_rows: int) -> torch.Tensor:
    """A bool [batch_rows, 1, 1, 0] attention mask carrying ``rows``: transformers builds no mask for a 4D one, an
    attention that reads it as a mask fails to broadcast it rather than attend without one, and being bool it is
    not cast (and copied without the rows) by a wrapper's mixed precision."""
    mask = torch.zeros((batch_rows, 1, 1, 0), dtype=torch.bool, device=rows.gather.device)
    setattr(mask, KEYWORD, rows)
    return mask


def check_used(rows: SequenceRows | None, model: torch.nn.Module) -> None:
    """After a forward given ``rows``: some attention layer read them (else the model's attention bypasses
    transformers' sdpa function and computed the rows without the layout's mask)."""
    if rows is not None and rows.calls == 0:
        raise UserError(
            f"{type(model).__name__} does not run transformers' sdpa attention function, which amapo's shared-prompt "
            "and packed layouts use on sdpa: pass --batch_layout padded, or --attn_implementation flex_attention"
        )
