"""Batch statistics over all data-parallel ranks: two gloo processes, each with half the batch, give each pair
the margin and the (averaged) gradient of one process over the union batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from amapo.losses import PreferenceInputs, all_gather_detached, build_loss

# Uneven halves (5 and 3 pairs) so the size exchange in the gather is exercised.
SPLIT = 5


def union_batch() -> PreferenceInputs:
    g = torch.Generator().manual_seed(0)
    lw, ll = torch.randint(1, 20, (8,), generator=g), torch.randint(1, 20, (8,), generator=g)
    return PreferenceInputs(-torch.rand(8, generator=g) * lw, -torch.rand(8, generator=g) * ll, lw, ll)


def shard(x: PreferenceInputs, rank: int) -> PreferenceInputs:
    part = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    return PreferenceInputs(
        x.chosen_logps[part].clone().requires_grad_(True),
        x.rejected_logps[part].clone(),
        x.chosen_lengths[part],
        x.rejected_lengths[part],
    )


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        x = shard(union_batch(), rank)
        row = {}
        for mode, gather in (("gathered", all_gather_detached()), ("local", None)):
            out = build_loss("amapo", beta=2.0, gather=gather)(x)
            out.loss.backward()
            grad = x.chosen_logps.grad.clone()
            x.chosen_logps.grad = None
            row[mode] = (out.margins.clone(), grad, out.batch_mean.clone())
        results[rank] = row
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_statistics_equal_one_process_over_the_union_batch():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
        results = dict(results)

    x = union_batch()
    x = PreferenceInputs(x.chosen_logps.requires_grad_(True), x.rejected_logps, x.chosen_lengths, x.rejected_lengths)
    single = build_loss("amapo", beta=2.0)(x)
    single.loss.backward()

    margins = torch.cat([results[0]["gathered"][0], results[1]["gathered"][0]])
    torch.testing.assert_close(margins, single.margins, atol=1e-6, rtol=0)
    # DDP averages gradients over ranks: the mean of per-rank-mean losses. With uneven shards that weights pairs
    # by 1/(2 * shard size), so compare the per-pair gradient times its shard's size.
    sizes = torch.tensor([SPLIT] * SPLIT + [8 - SPLIT] * (8 - SPLIT))
    grads = torch.cat([results[0]["gathered"][1], results[1]["gathered"][1]]) * sizes
    torch.testing.assert_close(grads, x.chosen_logps.grad * 8, atol=1e-6, rtol=0)
    for rank in (0, 1):
        torch.testing.assert_close(results[rank]["gathered"][2], single.batch_mean)

    # Per-device statistics differ from the union's: each rank's mean is its own half's.
    local_means = [results[r]["local"][2] for r in (0, 1)]
    assert not torch.allclose(local_means[0], local_means[1])
    local_margins = torch.cat([results[0]["local"][0], results[1]["local"][0]])
    assert not torch.allclose(local_margins, single.margins, atol=1e-3)
