"""Small agreements between data-parallel ranks (no-ops in a single process).

Code that decides something per rank and then issues collectives (gathers a sharded head once per chunk, steps a
sharded optimizer or not) must decide the same on every rank, or the ranks' collectives stop matching: a crash on
gloo, a hang on NCCL.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    """Where the default process group can reduce a tensor: the current GPU for NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def largest_across_ranks(value: int) -> int:
    if not _distributed():
        return value
    tensor = torch.tensor([value], device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def true_on_every_rank(flag: bool) -> bool:
    if not _distributed():
        return flag
    tensor = torch.tensor([int(flag)], device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())
