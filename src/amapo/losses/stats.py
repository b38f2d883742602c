"""Batch statistics for adaptive margins, and the choice of which pairs they are taken over.

AMaPO (arXiv 2511.09385, Eq. for gamma) and alpha-DPO estimate their margins from the mean and standard deviation
of a score over "the batch". Which batch is a parameter, not an accident of where the loss runs:

* ``gather=None``: this micro-batch on this device (what a naive port does);
* ``gather=all_gather_detached()``: every data-parallel rank's micro-batch, gathered without gradient (what
  AMaPO's released trainer does with ``dist.all_gather``);
* ``gather=StepStatistics()``: every pair of the optimizer step (all ranks, all accumulation micro-batches);
* ``gather=PoolGather(n, source)``: pools of exactly ``n`` consecutive pairs of what ``source`` sees, so the
  statistics do not depend on how many GPUs or accumulation steps hold the step (``--margin_pool_size``).

A gather function takes a detached 1-D tensor and returns either the 1-D tensor the statistics are taken over
(one pool for every pair of the batch) or ``Pools`` (each pair's own pool). The pairs of an optimizer step are
ordered (micro-batch, rank, pair): the order in which the sampler drew them, since accelerate deals batch i to
rank i mod world_size, so the pools of a run on W GPUs are those of a run on one GPU with W times the
accumulation steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Pools:
    """Pairs of one batch that take their statistics from different pools.

    ``values[i]`` holds every value of pool i (this batch's and other pairs'); the batch's pairs, in order, belong
    to the pools in turn: the first ``local_counts[0]`` to pool 0, the next ``local_counts[1]`` to pool 1, ...
    """

    values: list[torch.Tensor]
    local_counts: list[int]


GatherFn = Callable[[torch.Tensor], "torch.Tensor | Pools"]


@dataclass(frozen=True)
class BatchStats:
    """Mean and unbiased standard deviation of a detached score over the pool of each pair.

    ``mean`` and ``std`` are 0-D when the whole batch shares one pool, else one value per pair (its pool's).
    ``std`` is 0 (not NaN) for a one-pair pool: with no spread no pair is harder than another. ``count`` is the
    number of pairs per pool (averaged over the batch's pairs when its pools differ in size).
    """

    mean: torch.Tensor
    std: torch.Tensor
    count: float


def _moments(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = values.to(torch.promote_types(values.dtype, torch.float32))  # fp16/bf16 -> fp32, fp64 kept
    if values.numel() == 0:
        raise ValueError("batch statistics need at least one pair; got an empty batch")
    mean = values.mean()
    std = values.std(correction=1) if values.numel() > 1 else torch.zeros_like(mean)
    return mean, std


def batch_stats(values: torch.Tensor, gather: GatherFn | None = None) -> BatchStats:
    """Statistics of ``values`` (detached, computed in at least fp32) over the pools that ``gather`` defines.

    The standard deviation is the unbiased one (Bessel's correction), as ``torch.std`` in AMaPO's released
    trainer; the paper only says "standard deviation".
    """
    with torch.no_grad():
        local = values.detach().reshape(-1)
        pooled = gather(local) if gather is not None else local
        if not isinstance(pooled, Pools):
            mean, std = _moments(pooled.reshape(-1))
            return BatchStats(mean=mean, std=std, count=pooled.numel())
        moments = [_moments(pool.reshape(-1)) for pool in pooled.values]
        repeats = torch.tensor(pooled.local_counts, device=local.device)
        mean = torch.stack([m for m, _ in moments]).repeat_interleave(repeats)
        std = torch.stack([s for _, s in moments]).repeat_interleave(repeats)
        sizes = [pool.numel() * n for pool, n in zip(pooled.values, pooled.local_counts, strict=True)]
        return BatchStats(mean=mean, std=std, count=sum(sizes) / sum(pooled.local_counts))


def standardized_gap(values: torch.Tensor, stats: BatchStats) -> torch.Tensor:
    """(mean - x) / std: how far below its pool's mean each pair lies, in standard deviations.

    Where std is 0 every pair of the pool equals the mean, so the gap is defined as 0 (the quotient would be 0/0).
    For a pool of n values this is bounded by (n - 1) / sqrt(n) in magnitude, whatever the scale of x.
    """
    gap = stats.mean - values
    spread = stats.std > 0
    return torch.where(spread, gap / torch.where(spread, stats.std, torch.ones_like(stats.std)), torch.zeros_like(gap))


class RankGather:
    """Every rank's values, concatenated in rank order, without gradient (see ``all_gather_detached``).

    ``every`` k > 1: the values of ranks 0, k, 2k, ... only, and a rank's place is that of the first rank of its
    block of k. Under sequence parallelism each block of k consecutive ranks holds one micro-batch (every rank of it
    the same, reduced values), so the statistics pool over data-parallel ranks only, each pair counted once.
    """

    def __init__(self, group: dist.ProcessGroup | None = None, every: int = 1) -> None:
        self.group = group
        self.every = every

    def locate(self, values: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(every rank's values, where this rank's start among them)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(self.group) == 1:
            return values, 0
        world_size, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        local = values.detach().reshape(-1)
        size = torch.tensor([local.numel()], device=local.device, dtype=torch.long)
        sizes = [torch.zeros_like(size) for _ in range(world_size)]
        dist.all_gather(sizes, size, group=self.group)
        counts = [int(s.item()) for s in sizes]
        padded = local.new_zeros(max(counts))
        padded[: local.numel()] = local
        parts = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(parts, padded, group=self.group)
        k = self.every
        kept = [part[:n] for part, n in zip(parts[::k], counts[::k], strict=True)]
        return torch.cat(kept), sum(counts[: rank - rank % k : k])

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        return self.locate(values)[0]


def all_gather_detached(group: dist.ProcessGroup | None = None, every: int = 1) -> RankGather:
    """A gather function that concatenates every rank's values (rank order), without gradient.

    Ranks may hold different numbers of pairs (a last, smaller batch); sizes are exchanged first. Outside an
    initialized process group, or with one process, it returns its input unchanged. ``every``: see ``RankGather``.
    """
    return RankGather(group, every)


class StepStatistics:
    """A gather function for statistics over the whole optimizer step: every rank, every accumulation micro-batch.

    The training loop computes the statistic of every pair of the step in a no-grad pass before the step
    (``set``, with this rank's micro-batches in order), with the weights the step starts from, and every
    micro-batch's loss then reads those values, in the step's order (micro-batch, rank, pair). This costs one
    extra forward pass per step and makes k micro-batches of n pairs give the margins of one batch of k*n pairs.
    Each training call reads the next micro-batch's place. Outside a step (evaluation) it returns the local
    values: the eval batch.
    """

    def __init__(self, every: int = 1) -> None:
        self.every = every  # one rank per block of ``every``: a sequence-parallel group (``RankGather``)
        self.values: torch.Tensor | None = None
        self.starts: list[int] = []
        self.sizes: list[int] = []
        self.position = 0
        self.active = False

    def set(self, micro_batches: list[torch.Tensor]) -> None:
        """The statistic of every pair of this rank's micro-batches of the step, one tensor per micro-batch."""
        sizes = [v.numel() for v in micro_batches]
        local = torch.cat([v.detach().reshape(-1) for v in micro_batches])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world_size, rank = dist.get_world_size() // self.every, dist.get_rank() // self.every
            gather = all_gather_detached(every=self.every)
            gathered_sizes = gather(torch.tensor(sizes, device=local.device, dtype=torch.long))
            if gathered_sizes.numel() != world_size * len(sizes):
                raise RuntimeError("ranks hold different numbers of micro-batches in one optimizer step")
            table = gathered_sizes.reshape(world_size, len(sizes)).tolist()  # [rank][micro-batch]
            per_rank = gather(local).split([sum(row) for row in table])
            chunks = [part.split(row) for part, row in zip(per_rank, table, strict=True)]
            self.values = torch.cat([chunks[r][k] for k in range(len(sizes)) for r in range(world_size)])
            before = [sum(table[r][k] for r in range(world_size)) for k in range(len(sizes))]
            self.starts = [sum(before[:k]) + sum(table[r][k] for r in range(rank)) for k in range(len(sizes))]
        else:
            self.values = local
            self.starts = [sum(sizes[:k]) for k in range(len(sizes))]
        self.sizes, self.position = sizes, 0

    def locate(self, values: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(the step's values, where this micro-batch's start among them); the local values outside a step."""
        if not self.active or self.values is None:
            return values, 0
        k, self.position = self.position, self.position + 1
        if k >= len(self.sizes) or values.numel() != self.sizes[k]:
            raise RuntimeError(
                f"step statistics: loss call {k + 1} with {values.numel()} pairs does not match the step's "
                f"micro-batches {self.sizes}"
            )
        return self.values, self.starts[k]

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        return self.locate(values)[0]


class PoolGather:
    """Pools of exactly ``size`` consecutive pairs of what ``source`` sees (in its order), whatever holds them.

    ``source`` is None (this micro-batch), ``all_gather_detached()`` (this micro-batch on every rank) or a
    ``StepStatistics`` (the whole optimizer step): the smallest that holds whole pools. Pools start at the first
    pair ``source`` sees; when it holds a number of pairs that ``size`` does not divide (the epoch's last, smaller
    step), the last pool holds what is left.
    """

    def __init__(self, size: int, source: RankGather | StepStatistics | None = None) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = size
        self.source = source

    def __call__(self, values: torch.Tensor) -> Pools:
        seen, start = self.source.locate(values) if self.source is not None else (values, 0)
        end = start + values.numel()
        pools, counts = [], []
        for pool in range(start // self.size, (end - 1) // self.size + 1):
            low, high = pool * self.size, min((pool + 1) * self.size, seen.numel())
            pools.append(seen[low:high])
            counts.append(min(high, end) - max(low, start))
        return Pools(values=pools, local_counts=counts)


def margin_statistics(
    scope: str, pool_size: int | None, every: int = 1
) -> tuple[GatherFn | None, StepStatistics | None]:
    """The ``gather`` a loss's adaptive statistics pool over, for ``scope`` (micro_batch, all_ranks, optimizer_step)
    cut into pools of ``pool_size`` (None: one pool), and the ``StepStatistics`` a trainer fills before each step
    when the scope is the optimizer step (else None). ``every``: the sequence-parallel size (ranks are then pooled
    one per SP group, ``RankGather``)."""
    sources = {
        "micro_batch": None,
        "all_ranks": all_gather_detached(every=every),
        "optimizer_step": StepStatistics(every),
    }
    if scope not in sources:
        raise ValueError(f"margin statistics scope must be one of {', '.join(sources)}, got {scope!r}")
    source = sources[scope]
    gather = PoolGather(pool_size, source) if pool_size else source
    return gather, (source if isinstance(source, StepStatistics) else None)
