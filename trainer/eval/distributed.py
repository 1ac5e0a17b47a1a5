"""torch.distributed gather for :class:`trainer.eval.evaluator.Evaluator` (python objects, any sizes)."""

from __future__ import annotations

import torch.distributed as dist


def all_gather_objects(obj: object, group: dist.ProcessGroup | None = None) -> list[object]:
    """Every rank's ``obj`` in rank order; ``[obj]`` when torch.distributed is not initialised.

    Pickles objects, so ranks may hold different numbers of records. A collective: every rank of
    ``group`` must call it. With NCCL the current CUDA device must be set (``torch.cuda.set_device``).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, obj, group=group)
    return gathered
