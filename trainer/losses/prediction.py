"""Prediction losses: winner-takes-all trajectory regression and mode classification at GT centres."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models.bev import BevGeometry
from models.warp import sample_at_points


def read_out_trajectories(trajectories: Tensor, mode_logits: Tensor, centres: Tensor,
                          geometry: BevGeometry) -> tuple[Tensor, Tensor]:
    """Bilinear read-out at metric centres: trajectories [B, K, T_f, 2, H, W], mode_logits [B, K, H, W],
    centres [B, M, 2] -> (offsets [B, M, K, T_f, 2] from the centre, logits [B, M, K])."""
    b, k, t, _, h, w = trajectories.shape
    sampled = sample_at_points(torch.cat([trajectories.reshape(b, k * t * 2, h, w), mode_logits], dim=1),
                               centres, geometry)  # [B, M, K*T*2 + K]
    return sampled[..., : k * t * 2].reshape(b, -1, k, t, 2), sampled[..., k * t * 2:]


def winner_takes_all_losses(offsets: Tensor, logits: Tensor, target: Tensor, step_valid: Tensor,
                            usable: Tensor) -> tuple[Tensor, Tensor]:
    """(regression, classification) losses over usable objects.

    offsets: [B, M, K, T_f, 2] predicted; logits: [B, M, K]; target: [B, M, T_f, 2] true offsets from the
    centre; step_valid: [B, M, T_f] bool; usable: [B, M] bool. The winning mode is the one with the lowest
    average displacement over valid steps; only it is regressed (smooth L1 over valid steps) and it is the
    classification label.
    """
    offsets, logits, target = offsets.float(), logits.float(), target.float()
    valid = step_valid & usable[..., None]  # [B, M, T_f]
    counted = valid.any(dim=-1)  # [B, M]
    step_w = valid.to(offsets.dtype)
    displacement = torch.linalg.vector_norm(offsets - target[:, :, None], dim=-1)  # [B, M, K, T_f]
    ade = (displacement * step_w[:, :, None]).sum(-1) / step_w.sum(-1, keepdim=True).clamp_min(1)
    best = ade.detach().argmin(dim=-1)  # [B, M]
    winner = offsets.gather(2, best[..., None, None, None].expand(-1, -1, 1, *offsets.shape[3:])).squeeze(2)
    reg = F.smooth_l1_loss(winner, target, reduction="none").sum(-1)  # [B, M, T_f]
    regression = (reg * step_w).sum() / step_w.sum().clamp_min(1)
    ce = F.cross_entropy(logits.flatten(0, 1), best.flatten(), reduction="none").view_as(best)
    weight = counted.to(ce.dtype)
    classification = (ce * weight).sum() / weight.sum().clamp_min(1)
    return regression, classification
