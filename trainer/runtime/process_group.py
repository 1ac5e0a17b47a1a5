"""Process groups and collectives over them: joining the launcher's group, sums, gathers, the barrier.

The trainer's ``Runtime``, the evaluation entry point and the ZeRO memory bench (its gather across engines) use
these; nothing else in the project calls ``torch.distributed``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate launch, deepspeed, srun) started this process."""
    return any(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def default_backend() -> str:
    """NCCL on GPUs, gloo on the CPU."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def join_process_group(backend: str, timeout: timedelta) -> None:
    """Join the launcher's process group before Accelerate / DeepSpeed would (they reuse it).

    Under torch elastic (torchrun, accelerate launch) the agent hosts the store and keeps it across
    restarts, so a group re-formed after a worker crash could read the crashed attempt's peer
    addresses. Keys are therefore prefixed with the restart count.
    """
    if dist.is_initialized():
        return
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend=backend, store=dist.PrefixStore(f"turbotrain/attempt_{attempt}", store),
                            rank=rank, world_size=world, timeout=timeout)


def join_launcher_group(timeout: timedelta) -> tuple[int, int]:
    """(rank, world size) from the launcher's environment, joining its group when WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    join_process_group(default_backend(), timeout)
    return dist.get_rank(), dist.get_world_size()


def _grouped() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks of the default process group (a new detached tensor), or ``tensor``
    itself in a single process. Every rank must call it at the same point; inside a backward pass (the
    balancer's fork) the graph order makes that so. It never copies to the host."""
    if not _grouped():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (pickled, so sizes may differ), or ``[obj]`` in a single process. A
    collective: every rank must call it. With NCCL the current CUDA device must be set."""
    if not _grouped():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process)."""
    if not _grouped():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    if _grouped():
        dist.barrier()


def leave_process_group() -> None:
    """Tear the default group down, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
