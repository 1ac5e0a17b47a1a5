"""CenterPoint-style Gaussian centre heatmap targets (pure functions)."""

from __future__ import annotations

import torch
from torch import Tensor

from models.bev import BevGeometry
from models.box_coding import box_centre_cells


def gaussian_radius(length_cells: Tensor, width_cells: Tensor, min_overlap: float) -> Tensor:
    """CenterNet's radius (in cells) such that a box shifted by it keeps IoU >= ``min_overlap`` (elementwise)."""
    h, w = length_cells, width_cells
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def objects_on_map(gt_boxes: Tensor, gt_mask: Tensor, geometry: BevGeometry) -> tuple[Tensor, Tensor]:
    """(cells [B, M, 2] int64 (col, row) of each centre, usable [B, M] bool: real objects whose centre is on the map)."""
    cells = box_centre_cells(gt_boxes, geometry)
    col, row = cells[..., 0], cells[..., 1]
    on_map = (col >= 0) & (col < geometry.width) & (row >= 0) & (row < geometry.height)
    clamped = torch.stack((col.clamp(0, geometry.width - 1), row.clamp(0, geometry.height - 1)), dim=-1)
    return clamped, gt_mask & on_map


def heatmap_targets(gt_boxes: Tensor, gt_classes: Tensor, usable: Tensor, cells: Tensor, geometry: BevGeometry,
                    num_classes: int, *, min_overlap: float = 0.1, min_radius: int = 2) -> Tensor:
    """Gaussian peaks (exactly 1 at each object's centre cell) -> [B, num_classes, H, W] in [0, 1].

    gt_boxes: [B, M, 7]; gt_classes: [B, M]; usable: [B, M] bool; cells: [B, M, 2] (col, row).
    """
    radius = gaussian_radius(gt_boxes[..., 3] / geometry.cell_x, gt_boxes[..., 4] / geometry.cell_y, min_overlap)
    radius = radius.floor().clamp_min(min_radius)  # [B, M]
    sigma = (2 * radius + 1) / 6
    cols = torch.arange(geometry.width, device=gt_boxes.device, dtype=gt_boxes.dtype)
    rows = torch.arange(geometry.height, device=gt_boxes.device, dtype=gt_boxes.dtype)
    dx = cols[None, None, None, :] - cells[..., 0, None, None].to(gt_boxes.dtype)  # [B, M, 1, W]
    dy = rows[None, None, :, None] - cells[..., 1, None, None].to(gt_boxes.dtype)  # [B, M, H, 1]
    gauss = torch.exp(-(dx ** 2 + dy ** 2) / (2 * sigma[..., None, None] ** 2))
    inside = (dx.abs() <= radius[..., None, None]) & (dy.abs() <= radius[..., None, None])
    gauss = gauss * (inside & usable[..., None, None]).to(gauss.dtype)  # [B, M, H, W]
    one_hot = torch.nn.functional.one_hot(gt_classes.clamp(0, num_classes - 1), num_classes).to(gauss.dtype)
    if bool((gt_classes[usable] >= num_classes).any()):
        raise ValueError(f"gt_classes has indices >= num_classes ({num_classes})")
    per_class = gauss[:, :, None] * one_hot[..., None, None]  # [B, M, K, H, W]
    if per_class.shape[1] == 0:
        return gauss.new_zeros(gt_boxes.shape[0], num_classes, geometry.height, geometry.width)
    return per_class.amax(dim=1)
