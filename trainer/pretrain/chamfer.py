"""Masked L1 Chamfer loss between predicted and original points of reconstructed cells."""

from __future__ import annotations

import torch
from torch import Tensor

from trainer.pretrain.targets import ReconTargets


def gather_cells(recon_points: Tensor, cell_index: Tensor) -> Tensor:
    """[B, P, 3, H, W] decoder output -> [Nc, P, 3] predictions of the cells in ``cell_index``."""
    b, p, c, h, w = recon_points.shape
    flat = recon_points.permute(0, 3, 4, 1, 2).reshape(b * h * w, p, c)
    return flat[cell_index]


def chamfer_l1(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Symmetric L1 Chamfer distance per cell.

    pred: [Nc, P, 3]; target: [Nc, N, 3]; valid: [Nc, N] bool (each cell has >= 1 valid point).
    Returns [Nc]: mean over predictions of the L1 distance to the nearest valid target plus the mean
    over valid targets of the distance to the nearest prediction.
    """
    dist = (pred[:, :, None, :] - target[:, None, :, :]).abs().sum(-1)            # [Nc, P, N]
    pred_to_target = dist.masked_fill(~valid[:, None, :], float("inf")).amin(dim=2).mean(dim=1)
    target_to_pred = dist.amin(dim=1)                                              # [Nc, N]
    n_valid = valid.sum(dim=1).clamp(min=1)
    return pred_to_target + (target_to_pred * valid).sum(dim=1) / n_valid


def masked_chamfer_loss(recon_points: Tensor, targets: ReconTargets) -> Tensor:
    """Mean Chamfer L1 over the masked (reconstructed) cells; zero (with a graph) when none is masked."""
    if targets.cell_index.numel() == 0:
        return recon_points.sum() * 0.0
    pred = gather_cells(recon_points, targets.cell_index).float()
    return chamfer_l1(pred, targets.points.float(), targets.valid).mean()
