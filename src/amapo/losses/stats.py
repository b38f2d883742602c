"""Batch statistics for adaptive margins, and the choice of which batch they are taken over.

AMaPO (arXiv 2511.09385, Eq. for gamma) and alpha-DPO estimate their margins from the mean and standard deviation
of a score over "the batch". Which batch is a parameter, not an accident of where the loss runs:

* ``gather=None``: this micro-batch on this device (what a naive port does);
* ``gather=all_gather_detached()``: every data-parallel rank's micro-batch, gathered without gradient (what
  AMaPO's released trainer does with ``dist.all_gather``).

A gather function takes a detached 1-D tensor and returns the 1-D tensor the statistics are taken over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

GatherFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BatchStats:
    """Mean and unbiased standard deviation of a detached score over ``count`` pairs.

    ``std`` is 0 (not NaN) for a single pair: with no spread no pair is harder than another.
    """

    mean: torch.Tensor
    std: torch.Tensor
    count: int


def batch_stats(values: torch.Tensor, gather: GatherFn | None = None) -> BatchStats:
    """Statistics of ``values`` (detached, at least fp32) over the batch that ``gather`` defines.

    The standard deviation is the unbiased one (Bessel's correction), as ``torch.std`` in AMaPO's released
    trainer; the paper only says "standard deviation".
    """
    with torch.no_grad():
        pooled = values.detach().reshape(-1)
        if gather is not None:
            pooled = gather(pooled).reshape(-1)
        pooled = pooled.to(torch.promote_types(pooled.dtype, torch.float32))  # fp16/bf16 -> fp32, fp64 kept
        count = pooled.numel()
        if count == 0:
            raise ValueError("batch statistics need at least one pair; got an empty batch")
        mean = pooled.mean()
        std = pooled.std(correction=1) if count > 1 else torch.zeros_like(mean)
    return BatchStats(mean=mean, std=std, count=count)


def standardized_gap(values: torch.Tensor, stats: BatchStats) -> torch.Tensor:
    """(mean - x) / std: how far below the batch mean each pair lies, in standard deviations.

    Where std is 0 every pair equals the mean, so the gap is defined as 0 (the quotient would be 0/0).
    For a sample of n values this is bounded by (n - 1) / sqrt(n) in magnitude, whatever the scale of x.
    """
    gap = stats.mean - values
    if stats.std.item() == 0.0:
        return torch.zeros_like(gap)
    return gap / stats.std


def all_gather_detached(group: dist.ProcessGroup | None = None) -> GatherFn:
    """A gather function that concatenates every rank's values (rank order), without gradient.

    Ranks may hold different numbers of pairs (a last, smaller batch); sizes are exchanged first. Outside an
    initialized process group, or with one process, it returns its input unchanged.
    """

    def gather(values: torch.Tensor) -> torch.Tensor:
        if not (dist.is_available() and dist.is_initialized()):
            return values
        world_size = dist.get_world_size(group)
        if world_size == 1:
            return values
        local = values.detach().reshape(-1)
        size = torch.tensor([local.numel()], device=local.device, dtype=torch.long)
        sizes = [torch.zeros_like(size) for _ in range(world_size)]
        dist.all_gather(sizes, size, group=group)
        counts = [int(s.item()) for s in sizes]
        padded = local.new_zeros(max(counts))
        padded[: local.numel()] = local
        parts = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(parts, padded, group=group)
        return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])

    return gather


class StepStatistics:
    """A gather function for statistics over the whole optimizer step: every rank, every accumulation micro-batch.

    The training loop computes the statistic of every pair of the step in a no-grad pass before the step
    (``set``), with the weights the step starts from, and every micro-batch's loss then reads those values.
    This costs one extra forward pass per step and makes k micro-batches of n pairs give the margins of one
    batch of k*n pairs. Outside a step (evaluation) it returns the local values: the eval batch.
    """

    def __init__(self) -> None:
        self.values: torch.Tensor | None = None
        self.active = False

    def set(self, values: torch.Tensor) -> None:
        self.values = values.detach()

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        return self.values if self.active and self.values is not None else values
