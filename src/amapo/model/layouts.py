"""Batch layouts on the model side: which layout a model computes exactly, and the inputs each layout feeds it.

The collator (``amapo.data.collator``) builds three layouts of the same pairs: ``padded`` (one row per sequence),
``shared_prompt`` (prompt + chosen + rejected in one row, the rejected tokens masked off the chosen ones) and
``packed`` (sequences back to back, boundaries in the position ids).

Memory: no layout builds a [rows, T, T] tensor on sdpa. Padded rows need no mask (right padding: causality hides
every pad from every real token); shared-prompt and packed rows have their attention computed one sequence per row
(``amapo.model.sequence_rows``), so they need none either. Eager takes a custom mask only as a dense tensor
(``DENSE_MASK_ATTENTIONS``) and computes a [rows, heads, T, T] score matrix anyway: there a shared-prompt batch costs
a [B, 1, T, T] mask, which grows with the square of the row while the prompt activations it saves grow linearly, and
``auto`` weighs the two per batch (``DenseMaskCost``, ``LayoutChoice``); packed rows there are as wide as the longest
sequence, never the whole batch, with one block-diagonal mask shared by all layers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from amapo.hf_internals import attention_implementation
from amapo.model import sequence_rows
from amapo.model.wrappers import causal_lm_of

# Attentions that compute a shared-prompt row exactly: eager with a dense additive [B, 1, T, T] mask, sdpa one
# sequence per row (``sequence_rows``: no mask), flex_attention with a BlockMask (FlexAttention skips the masked
# blocks: no dense mask, a flash-class kernel).
MASKED_ATTENTIONS = ("eager", "sdpa", "flex_attention")
# Attentions that take a custom mask only as a dense [rows, 1, T, T] tensor: the layout is chosen per batch there.
DENSE_MASK_ATTENTIONS = ("eager",)
logger = logging.getLogger(__name__)


def layout_for(requested: str, attention: str | None, sliding_window: int | None, max_length: int) -> str:
    """The collator layout: ``requested``, or for ``auto`` the fastest one the model's attention computes exactly.

    ``attention``: the model's attention implementation (None: transformers' default, sdpa or eager).
    shared_prompt needs an attention that takes amapo's mask (``MASKED_ATTENTIONS``) and no sliding window shorter
    than a sequence (the custom mask replaces the window); packed reads sequence boundaries from the position ids
    (flash-attention's varlen kernels, FlexAttention's document mask; on eager and sdpa rows as wide as the longest
    sequence, ``collator_options``); padded works everywhere. ``auto`` on eager answers ``auto``: shared_prompt or
    padded, whichever costs less memory for each batch's lengths (``LayoutChoice``); on sdpa the shared prompt,
    which needs no mask there (``sequence_rows``).
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
    if not masked or windowed:
        return "padded"
    return "auto" if attention in DENSE_MASK_ATTENTIONS else "shared_prompt"


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


def collator_options(layout: str, attention: str | None, cost: DenseMaskCost | None = None, announce: bool = True):
    """The collator's layout arguments (``PreferenceCollator``) for ``layout``, ``layout_for``'s answer.

    On eager, ``auto`` and an explicit ``shared_prompt`` are weighed per batch by ``cost``
    (``LayoutChoice``; without a cost ``auto`` is shared_prompt); packed rows are as wide as the batch's longest
    sequence there (one row of all sequences on flash-attention, whose varlen kernels take one row, and on
    FlexAttention). ``announce``: say what auto chose (the main process).
    """
    attention = attention or "sdpa"
    options = {"layout": layout}
    if layout == "packed":
        options["packed_rows"] = "one" if "flash" in attention or attention == "flex_attention" else "longest"
    if attention in DENSE_MASK_ATTENTIONS and layout in ("auto", "shared_prompt") and cost is not None:
        options["choose_layout"] = LayoutChoice(cost, layout, attention, announce)
    elif layout == "auto":
        options["layout"] = "shared_prompt"
    return options


def _element_size(dtype) -> int:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return torch.finfo(dtype).bits // 8 if isinstance(dtype, torch.dtype) else 4


@dataclass(frozen=True)
class DenseMaskCost:
    """Bytes a batch costs in the padded or the shared-prompt layout on an attention that takes a custom mask only
    as a dense tensor (eager; sdpa needs none, ``sequence_rows``)::

        bytes(layout) = rows x T x token_bytes + rows x T^2 x square_bytes(layout)

    rows x T are the batch's token slots: padded, 2B rows as wide as its longest prompt + response; shared_prompt,
    B rows as wide as its longest prompt + chosen + rejected (the prompt once: what the layout saves).

    ``token_bytes``, the activations one token slot keeps: hidden x e x factor x L, where e is the dtype's bytes per
    element, and L = layers while training, layers / factor + 1 with activation checkpointing (each layer's input,
    plus one layer recomputed), 1 without gradients (one layer's at a time). factor = 10 + 4 x intermediate / hidden
    (21 without ``intermediate_size``): what a Llama-style layer saves for backward per token, ten hidden-sized
    tensors (two norms' inputs and outputs, q, k, v, rotated q and k, the attention output) and four
    intermediate-sized ones (gate, up, act(gate), their product). For the benchmark's model (hidden 256, MLP 688) that
    is 20.75; summing the storages ``saved_tensors_hooks`` sees in a training forward gives 21.4 there. With ``lean``
    activations (``amapo.model.lean_activations``: the norms keep their input only, act(gate) is recomputed, and
    the norms' outputs and the SwiGLU product the next linears would keep are rebuilt in backward) factor =
    6 + 2 x intermediate / hidden (11.4 there; the hooks see 14.7 per token at 2 rows of 512 tokens, against 19.4
    for the lean modules without the rebuilt outputs and 24.4 for none).

    ``square_bytes``, per element of a row's T x T: shared_prompt has amapo's additive mask, e bytes, one tensor
    read by every layer (built a row at a time: about 10 x T^2 bytes of temporaries, measured, left out); padded has
    none on sdpa (``model_inputs``) and transformers' additive causal mask (e) on eager. Eager adds the attention
    probabilities each kept layer saves, heads x e (measured 0.94-1.0 x heads x T^2 x e per layer) in both layouts.
    The mask is counted in the weights' dtype, the activations too (under autocast they are 16-bit: a little less).
    """

    token_bytes: float
    mask_bytes: float  # per element of the shared-prompt mask
    padded_bytes: float  # per element of a padded row's T x T (transformers' mask on eager)
    scores_bytes: float  # per element of a row's T x T on eager: the saved attention probabilities

    @classmethod
    def of(
        cls,
        config,
        attention: str | None,
        dtype=None,
        *,
        training: bool = True,
        checkpointing: bool = False,
        lean: bool = False,
    ):
        """The cost for a transformers ``config`` (its text config's sizes); ``dtype``: the weights' (a torch dtype,
        its name, or None / "auto" for the config's)."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden, layers = text.hidden_size, text.num_hidden_layers
        intermediate = getattr(text, "intermediate_size", None)
        if lean:
            factor = 6 + 2 * intermediate / hidden if intermediate else 11.0
        else:
            factor = 10 + 4 * intermediate / hidden if intermediate else 21.0
        e = _element_size(dtype if dtype not in (None, "auto") else getattr(text, "dtype", None))
        if not training:
            kept, layers_kept = 1.0, 1
        elif checkpointing:
            kept, layers_kept = layers / factor + 1, 1
        else:
            kept, layers_kept = float(layers), layers
        eager = (attention or "sdpa") == "eager"
        scores = text.num_attention_heads * e * layers_kept if eager else 0
        return cls(hidden * e * factor * kept, e, e if eager else 0, scores)

    def bytes(self, layout: str, lengths: Sequence[tuple[int, int, int]]) -> float:
        """What ``layout`` costs for pairs of (prompt, chosen, rejected) token counts: padded or shared_prompt."""
        if layout == "shared_prompt":
            rows, width, square = len(lengths), max(p + c + r for p, c, r in lengths), self.mask_bytes
        else:
            rows, width, square = 2 * len(lengths), max(p + max(c, r) for p, c, r in lengths), self.padded_bytes
        return rows * width * (self.token_bytes + width * (square + self.scores_bytes))


class LayoutChoice:
    """The layout of each batch on eager (the collator's ``choose_layout``).

    ``auto``: shared_prompt or padded, whichever ``cost`` says takes less memory at the batch's lengths; the first
    batch that takes padded says so and why, once per process and cost (not again at each switch, nor for each set
    an evaluation scores). ``shared_prompt`` (asked for): kept, with one warning at the first batch whose mask
    outweighs what it saves.
    """

    said: ClassVar[set] = set()  # (requested, attention, cost) already announced in this process

    def __init__(self, cost: DenseMaskCost, requested: str = "auto", attention: str = "sdpa", announce: bool = True):
        self.cost, self.requested, self.attention, self.announce = cost, requested, attention, announce

    def __call__(self, lengths: Sequence[tuple[int, int, int]]) -> str:
        shared, padded = self.cost.bytes("shared_prompt", lengths), self.cost.bytes("padded", lengths)
        if shared <= padded:
            return "shared_prompt"
        key = (self.requested, self.attention, self.cost)
        if self.announce and key not in self.said:
            self.said.add(key)
            width = max(p + c + r for p, c, r in lengths)
            why = (
                f"{len(lengths)} pairs, shared-prompt rows of {width} tokens: ~{_mib(shared)} with its dense "
                f"[{len(lengths)}, 1, {width}, {width}] mask vs ~{_mib(padded)} padded"
            )
            if self.requested == "shared_prompt":
                logger.warning(
                    "batch_layout=shared_prompt on %s costs more memory than padded rows at this batch's lengths "
                    "(%s): --batch_layout auto takes padded for such batches; sdpa, flex_attention or "
                    "flash_attention_2 share the prompt without a dense mask",
                    self.attention,
                    why,
                )
            else:
                print(
                    f"amapo: batch layout auto on {self.attention}: padded from this batch on wherever the shared "
                    f"prompt's mask costs more than it saves ({why}; weighed per batch, DenseMaskCost)"
                )
        return "shared_prompt" if self.requested == "shared_prompt" else "padded"


def _mib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{math.ceil(size / 2**20)} MiB"


def model_inputs(batch: dict[str, torch.Tensor], dtype: torch.dtype, attention: str | None = None) -> dict:
    """input_ids, position_ids and the attention mask of the batch's layout, in the form ``attention`` takes.

    Padded rows on sdpa get no mask: they are right-padded, so causality alone keeps every pad from every real token
    (a pad's own output is never read), and transformers would otherwise build a [rows, 1, T, T] bool mask that
    sdpa turns into the model's dtype and saves in every layer. Shared-prompt and packed rows on sdpa get none
    either: their attention runs one sequence per row (``sequence_rows``, the ``amapo_sequence_rows`` keyword).
    Packed rows on eager get one additive block-diagonal mask shared by all layers (``packed_mask``), not
    transformers' per-layer copies.
    """
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    if attention == "sdpa" and "attention_mask" not in batch:  # shared prompt or packed
        sequence_rows.install()
        segments = batch.get("segment_ids")
        if segments is not None:
            rows = sequence_rows.SequenceRows.of_shared_prompt(segments)
        else:
            rows = sequence_rows.SequenceRows.of_packed(batch["position_ids"])
        inputs["attention_mask"] = sequence_rows.placeholder_mask(rows, len(batch["input_ids"]))
        inputs[sequence_rows.KEYWORD] = rows
    elif "segment_ids" in batch:
        if attention == "flex_attention":
            inputs["attention_mask"] = shared_prompt_block_mask(batch["segment_ids"])
        else:
            inputs["attention_mask"] = shared_prompt_mask(batch["segment_ids"], dtype)
    elif "attention_mask" in batch:  # padded
        inputs["attention_mask"] = None if attention == "sdpa" else batch["attention_mask"]
    elif attention in DENSE_MASK_ATTENTIONS:  # packed: the sequences' boundaries are where the positions restart
        inputs["attention_mask"] = packed_mask(batch["position_ids"], dtype)
    else:  # packed: none, the position ids mark the sequences (flash-attention's varlen, FlexAttention)
        inputs["attention_mask"] = None
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
    return _additive_mask(shared_prompt_allowed(segment_ids), segment_ids, dtype)


def packed_mask(position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [R, 1, T, T] mask of packed rows: causal within each sequence, a sequence starting where its
    position is 0 (the padding at a row's end is a sequence of its own, whose outputs are never read)."""
    documents = (position_ids == 0).cumsum(-1)

    def allowed(b, h, q, kv):
        return (documents[b, q] == documents[b, kv]) & (kv <= q)

    return _additive_mask(allowed, position_ids, dtype)


def _additive_mask(allowed, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where ``allowed(row, None, q, kv)``, the dtype's minimum elsewhere: [R, 1, T, T] for ``ids`` [R, T], built
    one row at a time, so that its bool temporaries are T x T, not R x T x T (measured peak RSS while building all
    rows at once: 6.2 bytes per element in fp32; now the mask's own 4)."""
    rows, t = ids.shape
    index = torch.arange(t, device=ids.device)
    mask = torch.zeros((rows, 1, t, t), dtype=dtype, device=ids.device)
    for row in range(rows):
        mask[row, 0].masked_fill_(~allowed(row, None, index[:, None], index[None, :]), torch.finfo(dtype).min)
    return mask


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
