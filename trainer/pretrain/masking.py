"""Masks over occupied BEV cells of every agent-frame, as pure functions of the voxel coordinates.

A voxel is masked when the BEV cell containing it is masked; masked voxels keep their coordinates
(the encoder swaps their features for a learnable token). Two modes:

- ``random_cell_mask``: per agent-frame, exactly ``round(ratio * occupied cells)`` cells.
- ``world_cell_mask``: cells of the ego BEV frame now; every agent's voxel whose centre falls in a
  masked ego cell is masked, so the same region is hidden from all agents (and, optionally, at
  all frames). The masked fraction is ``ratio`` in expectation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.grid import GridConfig


def _cells_per_voxel(grid: GridConfig, cell: float) -> int:
    k = cell / grid.voxel_size[0]
    if abs(k - round(k)) > 1e-6 or round(k) < 1 or abs(grid.voxel_size[0] - grid.voxel_size[1]) > 1e-9:
        raise ValueError(f"mask cell {cell} m must be a positive multiple of the (square) voxel size "
                         f"{list(grid.voxel_size[:2])}")
    return int(round(k))


def voxel_centres_xy(voxel_coords: Tensor, grid: GridConfig) -> Tensor:
    """[V, 4] (n, z, y, x) voxel indices -> [V, 2] (x, y) centres in metres (agent BEV frame)."""
    vx, vy = grid.voxel_size[0], grid.voxel_size[1]
    x = grid.x_range[0] + (voxel_coords[:, 3].float() + 0.5) * vx
    y = grid.y_range[0] + (voxel_coords[:, 2].float() + 0.5) * vy
    return torch.stack([x, y], dim=1)


def random_cell_mask(voxel_coords: Tensor, grid: GridConfig, *, cell: float, ratio: float,
                     generator: torch.Generator | None = None) -> Tensor:
    """[V] bool: per agent-frame n, ``round(ratio * c_n)`` of its c_n occupied cells, uniformly at random."""
    k = _cells_per_voxel(grid, cell)
    _, ny, nx = grid.shape_zyx
    cy, cx = voxel_coords[:, 2].long() // k, voxel_coords[:, 3].long() // k
    cells_y, cells_x = -(-ny // k), -(-nx // k)
    key = (voxel_coords[:, 0].long() * cells_y + cy) * cells_x + cx
    unique_keys, inverse = torch.unique(key, return_inverse=True)
    group = unique_keys // (cells_y * cells_x)
    score = torch.rand(unique_keys.shape[0], generator=generator, device="cpu").to(key.device)
    order = torch.argsort(score)
    order = order[torch.argsort(group[order], stable=True)]
    sorted_group = group[order]
    counts = torch.bincount(sorted_group)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.shape[0], device=key.device) - starts[sorted_group]
    quota = torch.round(counts.float() * ratio).long()
    cell_masked = torch.zeros_like(unique_keys, dtype=torch.bool)
    cell_masked[order] = rank < quota[sorted_group]
    return cell_masked[inverse]


def world_cell_mask(voxel_coords: Tensor, grid: GridConfig, frame_to_ego: Tensor, *, agents: int, history: int,
                    cell: float, ratio: float, consistent_over_time: bool,
                    generator: torch.Generator | None = None) -> Tensor:
    """[V] bool mask of voxels whose centre lies in a masked cell of the ego BEV frame now.

    frame_to_ego: [B*A*T, 3, 3] transform of each agent-frame's BEV frame into the ego frame now
    (``agent_to_ego @ history_to_now``, flattened like the sparse index n = (b*A + a)*T + t).
    Every agent of a scene shares one draw per ego cell (and per frame unless
    ``consistent_over_time``), so a masked region is hidden from all agents that see it.
    """
    n = voxel_coords[:, 0].long()
    xy = voxel_centres_xy(voxel_coords, grid)
    mats = frame_to_ego[n].float()
    ego_xy = torch.einsum("vij,vj->vi", mats[:, :2, :2], xy) + mats[:, :2, 2]
    cx = torch.floor((ego_xy[:, 0] - grid.x_range[0]) / cell).long()
    cy = torch.floor((ego_xy[:, 1] - grid.y_range[0]) / cell).long()
    scene = n // (agents * history)
    frame = torch.zeros_like(n) if consistent_over_time else n % history
    cells, inverse = torch.unique(lexicographic_key([scene, cy, cx, frame]), return_inverse=True)
    score = torch.rand(cells.shape[0], generator=generator, device="cpu").to(voxel_coords.device)
    return (score < ratio)[inverse]


def lexicographic_key(columns: list[Tensor]) -> Tensor:
    """[V] int64 key per row of the integer ``columns`` (each [V]) that sorts rows lexicographically, first
    column most significant; equal rows, and only they, share a key.

    ``torch.unique`` over the 1-D key gives the same groups in the same order as ``torch.unique(dim=0)`` over the
    stacked columns, which on the CPU compares rows one by one: 119 ms against 6.3 ms for the whole world mask of
    a 27k-voxel tiny batch (paired median of 15, one thread), about a seventh of a pretraining step.
    """
    key = torch.zeros_like(columns[0], dtype=torch.int64)
    if key.numel() == 0:
        return key
    capacity = 1
    for column in columns:
        low = column.min()
        span = int(column.max() - low) + 1
        capacity *= span
        if capacity >= 2**63:
            raise OverflowError(f"the columns' value ranges need {capacity.bit_length()} bits, more than int64 holds")
        key = key * span + (column.long() - low)
    return key
