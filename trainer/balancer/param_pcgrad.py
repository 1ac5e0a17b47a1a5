"""Parameter-level PCGrad (Yu et al., NeurIPS 2020): a comparison baseline, one backward per task.

Single process only, without ZeRO / DeepSpeed / DDP. Under DeepSpeed 0.19 ``param.grad`` is None
after backward, two backward passes per step drop the first task's gradient (ZeRO-1/2) or crash
(ZeRO-3), and ``torch.autograd.grad`` on engine outputs breaks the engine: see docs/MODEL.md,
"The balancer: why a fork on Z". Use ``models.balancer.ConflictFork`` there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.balancer import BalancerConfig, ConflictStats, combine_task_gradients

_WHY = ("parameter-level PCGrad needs one backward per task and writes param.grad itself; under "
        "DeepSpeed/ZeRO param.grad is None after backward, a second engine.backward drops the first "
        "task's gradient (ZeRO-1/2) or crashes (ZeRO-3), and data-parallel wrappers all-reduce inside "
        "each backward (see docs/MODEL.md, 'The balancer: why a fork on Z'). Use the "
        "ZeRO-compatible feature-level fork models.balancer.ConflictFork instead")


def ensure_param_pcgrad_supported(model: nn.Module, world_size: int) -> None:
    """Raise RuntimeError unless ``model`` trains in one plain process (no ZeRO, DeepSpeed, DDP, FSDP).

    ``world_size``: the processes training together (``Runtime.world_size``; 1 outside a launcher)."""
    wrappers = {cls.__name__ for cls in type(model).__mro__}
    for name in ("DeepSpeedEngine", "DistributedDataParallel", "FullyShardedDataParallel"):
        if name in wrappers:
            raise RuntimeError(f"{_WHY}. Got a model wrapped in {name}.")
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        raise RuntimeError(f"{_WHY}. The model's parameters are managed by DeepSpeed ZeRO.")
    if world_size > 1:
        raise RuntimeError(f"{_WHY}. The run has {world_size} processes.")


class ParamPCGrad:
    """Backward for two task losses that projects conflicting *parameter* gradients (PCGrad).

    Shared parameters (reached by both losses) get PCGrad over their flattened gradient
    (``batch`` granularity of ``models.balancer.rules``, projection on the original vectors);
    parameters reached by one loss get that loss's gradient. Gradients accumulate into
    ``param.grad`` like ``Tensor.backward``; the caller steps the optimizer. ``world_size``: the processes
    training together (the runtime's); more than one is refused.
    """

    def __init__(self, model: nn.Module, *, world_size: int, rule: str = "pcgrad",
                 balance_magnitude: bool = False) -> None:
        ensure_param_pcgrad_supported(model, world_size)
        self.model = model
        self.world_size = world_size
        self.cfg = BalancerConfig(rule=rule, granularity="batch", balance_magnitude=balance_magnitude)
        self.last_stats: ConflictStats | None = None

    def backward(self, losses: Sequence[Tensor]) -> None:
        """losses: (detection loss, prediction loss), scalars of one graph through ``model``."""
        if len(losses) != 2:
            raise ValueError(f"ParamPCGrad balances exactly 2 task losses, got {len(losses)}")
        ensure_param_pcgrad_supported(self.model, self.world_size)
        params = [p for p in self.model.parameters() if p.requires_grad]
        per_task = [
            torch.autograd.grad(loss, params, retain_graph=i == 0, allow_unused=True)
            for i, loss in enumerate(losses)
        ]
        shared = [i for i, (a, b) in enumerate(zip(*per_task)) if a is not None and b is not None]
        new_grads: list[Tensor | None] = [a if a is not None else b for a, b in zip(*per_task)]
        if shared:
            flat = [torch.cat([per_task[t][i].reshape(-1) for i in shared]) for t in (0, 1)]
            combined, self.last_stats = combine_task_gradients(flat[0], flat[1], self.cfg, None)
            offset = 0
            for i in shared:
                n = params[i].numel()
                new_grads[i] = combined[offset:offset + n].view_as(params[i])
                offset += n
        for p, g in zip(params, new_grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)
