"""CenterPoint-style box coding relative to a BEV cell (pure functions).

A box (x, y, z, l, w, h, yaw) anchored at cell (col, row) is coded as 8 numbers:
(dx, dy) sub-cell offset of the centre from the cell centre in cell units, z relative to the grid's
vertical centre, log(l), log(w), log(h), sin(yaw), cos(yaw).
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.bev import BevGeometry

BOX_CODE_SIZE = 8
MIN_SIZE = 1e-3


def box_centre_cells(boxes: Tensor, geometry: BevGeometry) -> Tensor:
    """[..., 7] boxes -> [..., 2] int64 (col, row) of the cell holding each centre (may lie outside the map)."""
    return torch.floor(geometry.metric_to_cell(boxes[..., :2])).long()


def encode_boxes(boxes: Tensor, cells: Tensor, geometry: BevGeometry) -> Tensor:
    """boxes: [..., 7], cells: [..., 2] int (col, row) anchors -> [..., 8] regression targets."""
    col_row = geometry.metric_to_cell(boxes[..., :2])
    offset = col_row - (cells.to(col_row.dtype) + 0.5)
    z = boxes[..., 2:3] - geometry.z_center
    log_size = torch.log(boxes[..., 3:6].clamp_min(MIN_SIZE))
    yaw = boxes[..., 6:7]
    return torch.cat((offset, z, log_size, torch.sin(yaw), torch.cos(yaw)), dim=-1)


def class_codes(codes: Tensor, classes: Tensor) -> Tensor:
    """Each object's own box codes: codes [..., 8] (one shared regression) or [..., K*8] (one per class, class k
    at channels 8k..8k+7), classes [...] int -> [..., 8]."""
    if codes.shape[-1] == BOX_CODE_SIZE:
        return codes
    per_class = codes.unflatten(-1, (codes.shape[-1] // BOX_CODE_SIZE, BOX_CODE_SIZE))  # [..., K, 8]
    index = classes.long().clamp(0, per_class.shape[-2] - 1)[..., None, None].expand(*classes.shape, 1, BOX_CODE_SIZE)
    return per_class.gather(-2, index).squeeze(-2)


def decode_boxes(codes: Tensor, cells: Tensor, geometry: BevGeometry) -> Tensor:
    """Inverse of ``encode_boxes``: codes [..., 8], cells [..., 2] (col, row) -> boxes [..., 7]."""
    if codes.shape[-1] != BOX_CODE_SIZE:
        raise ValueError(f"box codes must have {BOX_CODE_SIZE} channels, got {codes.shape[-1]}")
    col_row = cells.to(codes.dtype) + 0.5 + codes[..., 0:2]
    xy = geometry.cell_to_metric(col_row)
    z = codes[..., 2:3] + geometry.z_center
    size = torch.exp(codes[..., 3:6].clamp(max=6.0))
    yaw = torch.atan2(codes[..., 6:7], codes[..., 7:8])
    return torch.cat((xy, z, size, yaw), dim=-1)
