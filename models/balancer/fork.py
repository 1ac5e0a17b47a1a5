"""The conflict-suppressing task fork on the shared feature Z.

``ConflictFork`` returns one alias of Z per task head. In the one ordinary backward pass autograd
hands its backward dL_det/dZ and dL_pred/dZ as separate arguments; it combines them with a rule
(``models.balancer.rules``) and sends one gradient on to the encoder. Head parameters only ever
see their own task's gradient because each head reads its own alias. DeepSpeed sees a normal
backward, so ZeRO 1/2/3, gradient accumulation and loss scaling work unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, autograd

from models.balancer.config import BalancerConfig
from models.balancer.rules import AllReduce, combine_with_moments, pair_moments
from models.balancer.stats import ConflictStats, stats_from_moments, stats_one_task
from models.balancer.task_fork import TaskFork


def combine_task_gradients(
    g_det: Tensor | None, g_pred: Tensor | None, cfg: BalancerConfig, all_reduce: AllReduce | None
) -> tuple[Tensor | None, ConflictStats | None]:
    """The encoder's gradient from the two task gradients on Z [B, C, H, W] (either may be None).

    A missing task gradient (its loss did not depend on Z this step) lets the other pass unchanged.
    """
    if g_det is None or g_pred is None:
        present, name = (g_det, "det") if g_pred is None else (g_pred, "pred")
        if present is None:
            return None, None
        return present, stats_one_task(present, present=name) if cfg.collect_stats else None
    needs_moments = cfg.collect_stats or cfg.rule != "sum" or cfg.balance_magnitude
    if not needs_moments:
        return g_det + g_pred, None
    m = pair_moments(g_det, g_pred, granularity=cfg.granularity, all_reduce=all_reduce)
    combined = combine_with_moments(g_det, g_pred, m, rule=cfg.rule, balance_magnitude=cfg.balance_magnitude, eps=cfg.eps)
    return combined, stats_from_moments(m, eps=cfg.eps) if cfg.collect_stats else None


class _ConflictForkFunction(autograd.Function):
    """z -> (z_det, z_pred) aliases; backward combines their gradients by the owner's rule."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, owner: ConflictFork) -> tuple[Tensor, Tensor]:
        ctx.owner = owner
        ctx.set_materialize_grads(False)
        return z.view_as(z), z.view_as(z)

    @staticmethod
    def backward(ctx: Any, g_det: Tensor | None, g_pred: Tensor | None) -> tuple[Tensor | None, None]:
        owner: ConflictFork = ctx.owner
        combined, stats = combine_task_gradients(g_det, g_pred, owner.cfg, owner.all_reduce)
        owner.last_stats = stats
        return combined, None


class ConflictFork(TaskFork):
    """Task fork whose backward suppresses gradient conflicts between detection and prediction.

    ``all_reduce`` sums a tensor across data-parallel ranks (the trainer sets its runtime's); it is
    used only by ``batch`` granularity. ``last_stats`` holds the statistics of the latest backward
    (detached device tensors, or None before the first backward / with ``collect_stats=False``).
    """

    num_tasks: int = 2

    def __init__(self, cfg: BalancerConfig | None = None, *, all_reduce: AllReduce | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else BalancerConfig()
        self.all_reduce = all_reduce
        self.last_stats: ConflictStats | None = None

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z: [B, C, H, W] -> (z_det, z_pred), aliases of z with a shared balancing backward."""
        if z.dim() < 2:
            raise ValueError(f"ConflictFork expects a batched feature [B, C, H, W], got shape {tuple(z.shape)}")
        if not (z.requires_grad and torch.is_grad_enabled()):
            return z, z
        return _ConflictForkFunction.apply(z, self)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"rule={c.rule}, granularity={c.granularity}, balance_magnitude={c.balance_magnitude}"
