"""The FlexAttention BlockMask of a shared-prompt batch (issue 34): built from block-level facts, it has the block
structure of torch's dense ``create_block_mask`` (empty / partial / full, block by block), the same mask_mod, and
no tensor anywhere near B x T x T while it is built."""

from __future__ import annotations

import random
import shutil
import time

import pytest
import torch
from largest_tensor import LargestTensor
from torch.nn.attention.flex_attention import create_block_mask, create_mask, flex_attention

from amapo.data.collator import PreferenceCollator
from amapo.model.layouts import shared_prompt_allowed, shared_prompt_block_mask, shared_prompt_mask


def collated_segments(lengths: list[tuple[int, int, int]]) -> torch.Tensor:
    """segment_ids [B, T] of the collator's shared-prompt rows for pairs of (prompt, chosen, rejected) lengths."""
    pairs = [
        {"prompt_input_ids": [5] * p, "chosen_input_ids": [6] * c, "rejected_input_ids": [7] * r} for p, c, r in lengths
    ]
    return PreferenceCollator(pad_token_id=0, layout="shared_prompt")(pairs)["segment_ids"]


def random_lengths(rng: random.Random, rows: int, longest: int) -> list[tuple[int, int, int]]:
    """Pairs with any lengths the collator takes: empty prompts, chosen or rejected answers included."""
    lengths = []
    for _ in range(rows):
        total = rng.randint(0, longest)
        p = rng.randint(0, total)
        c = rng.randint(0, total - p)
        lengths.append((p, c, total - p - c))
    return lengths


def blocks_of(num_blocks: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """A BlockMask's (num_blocks [B, H, n_q], indices [B, H, n_q, n_kv]) as bool [B, H, n_q, n_kv]."""
    listed = torch.arange(indices.shape[-1]) < num_blocks[..., None]
    dense = torch.zeros(indices.shape, dtype=torch.bool)
    return dense.scatter_(-1, indices.long(), listed)


def split(block_mask) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        blocks_of(block_mask.kv_num_blocks, block_mask.kv_indices),
        blocks_of(block_mask.full_kv_num_blocks, block_mask.full_kv_indices),
    )


def layouts():
    rng = random.Random(34)
    cases = [
        ("edge rows", [(0, 0, 0), (0, 3, 4), (5, 0, 2), (4, 6, 0), (1, 1, 1), (40, 0, 0)]),
        ("one token", [(1, 0, 0)]),
        ("all padding row", [(0, 0, 0), (3, 17, 12)]),
        ("T a multiple of every block size", [(100, 80, 76), (10, 50, 60), (0, 200, 56)]),
    ]
    for rows, longest in [(1, 7), (2, 40), (3, 100), (5, 300), (4, 129)]:
        cases.append((f"random B={rows} up to {longest}", random_lengths(rng, rows, longest)))
    return [pytest.param(lengths, id=name) for name, lengths in cases]


@pytest.mark.parametrize("block_size", [16, 32, 128])
@pytest.mark.parametrize("lengths", layouts())
def test_block_structure_equals_create_block_mask(lengths, block_size):
    segment_ids = collated_segments(lengths)
    b, t = segment_ids.shape
    got = shared_prompt_block_mask(segment_ids, block_size=block_size)
    want = create_block_mask(shared_prompt_allowed(segment_ids), b, None, t, t, device="cpu", BLOCK_SIZE=block_size)

    assert got.seq_lengths == (t, t) and (block_size, block_size) == got.BLOCK_SIZE
    assert torch.equal(got.to_dense(), want.to_dense())  # partial + full
    got_partial, got_full = split(got)
    want_partial, want_full = split(want)
    assert torch.equal(got_partial, want_partial) and torch.equal(got_full, want_full)
    assert not (got_partial & got_full).any()
    if t >= 4 * block_size:  # long rows hold every block type
        assert got_full.any() and got_partial.any() and not got.to_dense().all()

    # element level: the mask_mod is the dense mask's, full blocks are all allowed, empty blocks all masked
    allowed = create_mask(got.mask_mod, b, None, t, t, device="cpu")[:, 0]
    assert torch.equal(allowed, shared_prompt_mask(segment_ids, torch.float32)[:, 0] == 0)
    n = got_full.shape[-1]
    padded = torch.nn.functional.pad(allowed, (0, n * block_size - t, 0, n * block_size - t))
    per_block = padded.view(b, n, block_size, n, block_size).sum((2, 4))
    assert (per_block[got_full[:, 0]] == block_size**2).all()
    assert (per_block[~(got_partial | got_full)[:, 0]] == 0).all()


def test_any_segment_order_is_classified_exactly():
    """The classification reads only which segments each block holds, so even rows the collator never makes agree."""
    segment_ids = torch.randint(0, 4, (3, 150), generator=torch.Generator().manual_seed(0))
    segment_ids[0, 60:] = 3  # long runs, so that empty and full blocks occur too
    segment_ids[1, :90] = 1
    got = shared_prompt_block_mask(segment_ids, block_size=16)
    want = create_block_mask(shared_prompt_allowed(segment_ids), 3, None, 150, 150, device="cpu", BLOCK_SIZE=16)
    assert torch.equal(got.to_dense(), want.to_dense())
    assert all(torch.equal(g, w) for g, w in zip(split(got), split(want), strict=True))


def test_building_at_8k_tokens_allocates_nothing_like_b_t_t():
    """B = 2 rows of 8192 tokens: torch's dense create_block_mask returns a 134 MB [B, T, T] mask (and takes seconds);
    ours stays within a few B x T and B x (T / 128)^2 int64 tensors."""
    b, t, block = 2, 8192, 128
    segment_ids = collated_segments([(1000, 3000, 3500), (300, 4000, 3892)])
    assert segment_ids.shape == (b, t)
    start = time.perf_counter()
    with LargestTensor() as largest:
        block_mask = shared_prompt_block_mask(segment_ids)
    seconds = time.perf_counter() - start

    n = t // block
    assert largest.bytes <= 2 * 8 * b * (t + n * n), f"{largest.bytes} bytes; B x T x T = {b * t * t}"
    assert seconds < 2.0
    assert block_mask.kv_num_blocks.shape == (b, 1, n)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile(flex_attention) on CPU needs a C++ compiler")
def test_flex_attention_with_the_block_mask_equals_sdpa_with_the_dense_mask():
    """Compiled flex skips the empty blocks and runs no mask_mod on the full ones, so this checks the block structure
    itself (eager flex evaluates the mask_mod over every pair and reads only that; it is checked too)."""
    torch.manual_seed(0)
    segment_ids = collated_segments([(5, 20, 30), (40, 10, 50), (0, 0, 0), (1, 0, 70)])
    b, t = segment_ids.shape
    q, k, v = (torch.randn(b, 2, t, 16) for _ in range(3))
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=shared_prompt_mask(segment_ids, torch.float32)
    )
    block_mask = shared_prompt_block_mask(segment_ids, block_size=16)
    eager = flex_attention(q, k, v, block_mask=block_mask)
    torch.testing.assert_close(eager, want, rtol=1e-5, atol=1e-5)
    compiled = torch.compile(flex_attention)(q, k, v, block_mask=block_mask)
    torch.testing.assert_close(compiled, want, rtol=1e-5, atol=1e-5)
