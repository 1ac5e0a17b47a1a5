"""Reconstruction targets: the original points of masked voxels, binned into cells of Z.

The decoder reads the fused feature Z (ego BEV frame now) and predicts P points per cell as offsets
from the cell centre (z from the grid's vertical centre). Its targets are the points of the masked
voxels of every agent at the current frame, mapped into the ego frame now and grouped by Z cell,
keeping up to ``max_points`` per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.batch import Batch
from models.grid import GridConfig


@dataclass
class ReconTargets:
    """Per reconstructed cell: its flat index in Z and its original points."""

    cell_index: Tensor
    """[Nc] int64 flat index b*H*W + y*W + x into Z's cells."""
    points: Tensor
    """[Nc, N, 3] float32 offsets from the cell centre (x, y) and from the grid's vertical centre (z)."""
    valid: Tensor
    """[Nc, N] bool, True for real points (every cell has at least one)."""


def frame_to_ego(batch: Batch) -> Tensor:
    """[B*A*T, 3, 3] transform of every agent-frame's BEV frame into the ego frame now."""
    mats = batch.agent_to_ego[:, :, None] @ batch.history_to_now
    return mats.reshape(-1, 3, 3)


def reconstruction_targets(batch: Batch, voxel_mask: Tensor, grid: GridConfig, *, bev_shape: tuple[int, int],
                           bev_stride: int, max_points: int) -> ReconTargets:
    """Targets of the masked voxels (``voxel_mask`` [V] bool) at the current frame of real agents."""
    h, w = bev_shape
    a, t = batch.max_agents, batch.history
    n = batch.voxel_coords[:, 0].long()
    agent_real = batch.agent_mask.reshape(-1)[n // t]
    keep = voxel_mask & (n % t == t - 1) & agent_real
    pts = batch.voxels[keep].float()                                        # [Vm, P, 4]
    counts = batch.voxel_num_points[keep].long()
    slot = torch.arange(pts.shape[1], device=pts.device)
    valid = slot[None, :] < counts[:, None]
    src = n[keep][:, None].expand(-1, pts.shape[1])[valid]                  # [Np]
    xyz = pts[valid][:, :3]
    mats = frame_to_ego(batch).float()[src]
    ego_xy = torch.einsum("pij,pj->pi", mats[:, :2, :2], xyz[:, :2]) + mats[:, :2, 2]
    cell = (grid.voxel_size[0] * bev_stride, grid.voxel_size[1] * bev_stride)
    ix = torch.floor((ego_xy[:, 0] - grid.x_range[0]) / cell[0]).long()
    iy = torch.floor((ego_xy[:, 1] - grid.y_range[0]) / cell[1]).long()
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    scene = src // (a * t)
    flat = (scene * h + iy) * w + ix
    flat, ix, iy, ego_xy, z = flat[inside], ix[inside], iy[inside], ego_xy[inside], xyz[inside, 2]
    centre_x = grid.x_range[0] + (ix.float() + 0.5) * cell[0]
    centre_y = grid.y_range[0] + (iy.float() + 0.5) * cell[1]
    offsets = torch.stack([ego_xy[:, 0] - centre_x, ego_xy[:, 1] - centre_y,
                           z - 0.5 * (grid.z_range[0] + grid.z_range[1])], dim=1)
    cell_index, inverse = torch.unique(flat, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    sorted_cell = inverse[order]
    per_cell = torch.bincount(sorted_cell, minlength=cell_index.shape[0])
    starts = torch.cumsum(per_cell, 0) - per_cell
    rank = torch.arange(order.shape[0], device=order.device) - starts[sorted_cell]
    take = rank < max_points
    points = offsets.new_zeros(cell_index.shape[0], max_points, 3)
    mask = torch.zeros(cell_index.shape[0], max_points, dtype=torch.bool, device=offsets.device)
    points[sorted_cell[take], rank[take]] = offsets[order[take]]
    mask[sorted_cell[take], rank[take]] = True
    return ReconTargets(cell_index=cell_index, points=points, valid=mask)
