"""Rotated bird's-eye-view IoU by exact convex polygon intersection, batched over box pairs.

Each box pair is intersected by Sutherland-Hodgman clipping of rectangle A against the four edges
of rectangle B, done for all pairs at once on fixed-size vertex buffers (a convex quadrilateral
clipped by four half-planes has at most 8 vertices). Computation runs in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MAX_VERTICES = 8
_INSIDE_EPS = 1e-9


def _check_boxes(boxes: Tensor, name: str) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 7:
        raise ValueError(f"{name} must be [N, 7] (x, y, z, l, w, h, yaw), got shape {tuple(boxes.shape)}")


def box_corners_bev(boxes: Tensor) -> Tensor:
    """Counter-clockwise BEV corners of oriented boxes.

    boxes: [..., 7] (x, y, z, l, w, h, yaw), full sizes -> [..., 4, 2] (x, y), in box-frame order
    (+l/2, +w/2), (-l/2, +w/2), (-l/2, -w/2), (+l/2, -w/2).
    """
    centre, length, width, yaw = boxes[..., 0:2], boxes[..., 3], boxes[..., 4], boxes[..., 6]
    unit = boxes.new_tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])  # [4, 2]
    local = unit * torch.stack([length, width], dim=-1).unsqueeze(-2) / 2  # [..., 4, 2]
    cos, sin = torch.cos(yaw)[..., None], torch.sin(yaw)[..., None]
    x = local[..., 0] * cos - local[..., 1] * sin
    y = local[..., 0] * sin + local[..., 1] * cos
    return torch.stack([x, y], dim=-1) + centre.unsqueeze(-2)


def _next_index(count: Tensor, length: int) -> Tensor:
    """[P] vertex counts -> [P, length] index of each slot's cyclic successor among the first count."""
    idx = torch.arange(length, device=count.device).expand(count.shape[0], length)
    nxt = idx + 1
    return torch.where(nxt < count[:, None], nxt, torch.zeros_like(nxt))


def _clip_by_edge(poly: Tensor, count: Tensor, p: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """Clip convex polygons by the half-plane left of the directed edge p -> q.

    poly: [P, L, 2] vertices (first ``count`` valid), count: [P], p, q: [P, 2]
    -> (clipped [P, L, 2], new count [P]).
    """
    num, length = poly.shape[0], poly.shape[1]
    slot = torch.arange(length, device=poly.device)
    valid = slot[None, :] < count[:, None]  # [P, L]
    nxt = torch.gather(poly, 1, _next_index(count, length)[..., None].expand(-1, -1, 2))
    edge = (q - p)[:, None, :]
    dist_cur = edge[..., 0] * (poly[..., 1] - p[:, None, 1]) - edge[..., 1] * (poly[..., 0] - p[:, None, 0])
    dist_nxt = edge[..., 0] * (nxt[..., 1] - p[:, None, 1]) - edge[..., 1] * (nxt[..., 0] - p[:, None, 0])
    in_cur, in_nxt = dist_cur >= -_INSIDE_EPS, dist_nxt >= -_INSIDE_EPS
    t = (dist_cur / torch.where(in_cur != in_nxt, dist_cur - dist_nxt, torch.ones_like(dist_cur))).clamp(0, 1)
    crossing = poly + t[..., None] * (nxt - poly)
    # Each input vertex emits (itself if inside, the edge crossing if the edge crosses the line).
    candidates = torch.stack([poly, crossing], dim=2).reshape(num, 2 * length, 2)
    keep = torch.stack([in_cur & valid, (in_cur != in_nxt) & valid], dim=2).reshape(num, 2 * length)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :length]
    clipped = torch.gather(candidates, 1, order[..., None].expand(-1, -1, 2))
    return clipped, keep.sum(dim=1).clamp(max=length)


def _polygon_area(poly: Tensor, count: Tensor) -> Tensor:
    """Shoelace area of polygons [P, L, 2] with ``count`` [P] valid vertices (0 below 3)."""
    length = poly.shape[1]
    nxt = torch.gather(poly, 1, _next_index(count, length)[..., None].expand(-1, -1, 2))
    cross = poly[..., 0] * nxt[..., 1] - poly[..., 1] * nxt[..., 0]
    valid = torch.arange(length, device=poly.device)[None, :] < count[:, None]
    area = 0.5 * (cross * valid).sum(dim=1).abs()
    return torch.where(count >= 3, area, torch.zeros_like(area))


def intersection_area_bev(corners_a: Tensor, corners_b: Tensor) -> Tensor:
    """Exact intersection area of paired convex quadrilaterals.

    corners_a, corners_b: [P, 4, 2] counter-clockwise corners -> [P] area.
    """
    num = corners_a.shape[0]
    poly = torch.zeros(num, _MAX_VERTICES, 2, dtype=corners_a.dtype, device=corners_a.device)
    poly[:, :4] = corners_a
    count = torch.full((num,), 4, dtype=torch.long, device=corners_a.device)
    for edge in range(4):
        poly, count = _clip_by_edge(poly, count, corners_b[:, edge], corners_b[:, (edge + 1) % 4])
    return _polygon_area(poly, count)


def bev_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Rotated BEV IoU of every pair.

    boxes_a: [N, 7], boxes_b: [M, 7] (x, y, z, l, w, h, yaw; full sizes) -> [N, M] IoU in [0, 1]
    (dtype of boxes_a, float32 for integer input). Pairs whose circumscribed circles do not overlap
    are skipped (IoU 0); degenerate boxes have IoU 0.
    """
    _check_boxes(boxes_a, "boxes_a")
    _check_boxes(boxes_b, "boxes_b")
    out_dtype = boxes_a.dtype if boxes_a.is_floating_point() else torch.float32
    a, b = boxes_a.detach().to(torch.float64), boxes_b.detach().to(torch.float64)
    iou = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return iou.to(out_dtype)
    radius_a = 0.5 * torch.hypot(a[:, 3], a[:, 4])
    radius_b = 0.5 * torch.hypot(b[:, 3], b[:, 4])
    centre_dist = torch.cdist(a[:, :2], b[:, :2])
    ia, ib = torch.nonzero(centre_dist < radius_a[:, None] + radius_b[None, :], as_tuple=True)
    if ia.numel() == 0:
        return iou.to(out_dtype)
    iou[ia, ib] = _pair_iou(a[ia], b[ib])
    return iou.to(out_dtype)


def _pair_iou(a: Tensor, b: Tensor) -> Tensor:
    """[P, 7] x [P, 7] float64 -> [P] IoU of row i of ``a`` with row i of ``b`` (0 for degenerate pairs)."""
    inter = intersection_area_bev(box_corners_bev(a), box_corners_bev(b))
    union = a[:, 3] * a[:, 4] + b[:, 3] * b[:, 4] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter)).clamp(0, 1)


def paired_bev_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Rotated BEV IoU of aligned pairs: boxes_a, boxes_b [P, 7] -> [P] (IoU of row i with row i; dtype of
    boxes_a, float32 for integer input). No gradient flows (a training target, not a loss)."""
    _check_boxes(boxes_a, "boxes_a")
    _check_boxes(boxes_b, "boxes_b")
    if boxes_a.shape[0] != boxes_b.shape[0]:
        raise ValueError(f"paired boxes need equal counts, got {boxes_a.shape[0]} and {boxes_b.shape[0]}")
    out_dtype = boxes_a.dtype if boxes_a.is_floating_point() else torch.float32
    return _pair_iou(boxes_a.detach().to(torch.float64), boxes_b.detach().to(torch.float64)).to(out_dtype)


def centre_distance_bev(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """BEV centre distance of every pair: boxes_a [N, 7], boxes_b [M, 7] -> [N, M] metres."""
    _check_boxes(boxes_a, "boxes_a")
    _check_boxes(boxes_b, "boxes_b")
    a, b = boxes_a[:, :2].to(torch.float64), boxes_b[:, :2].to(torch.float64)
    return torch.cdist(a, b).to(boxes_a.dtype if boxes_a.is_floating_point() else torch.float32)
