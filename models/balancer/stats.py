"""Conflict statistics of one backward pass, kept as device tensors (no host sync in backward)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.balancer.rules import PairMoments


@dataclass(frozen=True)
class ConflictStats:
    """Detached fp32 0-dim tensors describing the detection / prediction gradients on Z.

    With ``batch`` granularity and an ``all_reduce`` they describe the global micro-batch;
    otherwise they describe this rank's micro-batch (average them across ranks for logging).
    """

    cosine: Tensor
    """Cosine between the two task gradients over the whole micro-batch (0 if either is zero)."""
    conflict_fraction: Tensor
    """Fraction of groups (samples, cells or the batch) with g_det · g_pred < 0, among groups where
    both gradients are nonzero (0 if there are none)."""
    norm_ratio: Tensor
    """|g_det| / |g_pred| over the micro-batch (inf if the prediction gradient is zero, nan if both are)."""

    def to_floats(self) -> dict[str, float]:
        """Python floats for logging (this synchronises with the device: call it outside backward)."""
        return {"cosine": float(self.cosine), "conflict_fraction": float(self.conflict_fraction),
                "norm_ratio": float(self.norm_ratio)}


def stats_from_moments(m: PairMoments, *, eps: float) -> ConflictStats:
    """Statistics from the per-group moments of the (unbalanced) task gradients."""
    dot, sq1, sq2 = m.dot.sum(), m.sq1.sum(), m.sq2.sum()
    cosine = dot / (sq1 * sq2).sqrt().clamp_min(max(eps, torch.finfo(torch.float32).tiny))
    active = (m.sq1 > 0) & (m.sq2 > 0)
    conflicting = ((m.dot < 0) & active).sum().float()
    fraction = conflicting / active.sum().clamp_min(1).float()
    return ConflictStats(cosine=cosine.detach(), conflict_fraction=fraction.detach(),
                         norm_ratio=(sq1.sqrt() / sq2.sqrt()).detach())


def stats_one_task(g: Tensor, *, present: str) -> ConflictStats:
    """Statistics when only one task sent a gradient (``present`` is ``det`` or ``pred``)."""
    norm = g.float().square().sum().sqrt().detach()
    zero = torch.zeros((), dtype=torch.float32, device=g.device)
    ratio = norm / zero if present == "det" else zero / norm
    return ConflictStats(cosine=zero, conflict_fraction=zero.clone(), norm_ratio=ratio)
