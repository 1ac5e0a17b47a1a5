"""The torch.distributed all-reduce injected into batch-level balancer rules."""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def distributed_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over all ranks of the default process group; ``t`` itself in a single process.

    Called inside the backward pass (from ``ConflictFork``) by every rank at the same point of the
    graph, so the collective is matched across ranks. It never copies to the host.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
