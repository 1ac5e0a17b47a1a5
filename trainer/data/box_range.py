"""Which boxes lie inside a BEV range: the rule is a choice, named here once (pure numpy).

- ``centre``: the box centre is inside ``[x_min, x_max) x [y_min, y_max)`` (TurboTrain's default);
- ``all_corners``: all four BEV corners are inside the closed range (OpenCOOD's
  ``mask_boxes_outside_range_numpy`` with its default of all 8 corners; z is not checked here);
- ``any_corner``: at least one BEV corner is inside the closed range (V2X-Real, which keeps a box with 2 of
  its 8 corners in range: with its height in range, that is one BEV corner).
"""

from __future__ import annotations

import numpy as np

from trainer.data.geometry import box_corners_xy

RANGE_RULES = ("centre", "all_corners", "any_corner")


def boxes_in_range(boxes: np.ndarray, bev_range, rule: str = "centre") -> np.ndarray:
    """[M] bool: boxes ``[M, 7]`` inside ``bev_range`` = (x_min, y_min, x_max, y_max) by ``rule``."""
    if rule not in RANGE_RULES:
        raise ValueError(f"range rule must be one of {RANGE_RULES}, got {rule!r}")
    x0, y0, x1, y1 = (float(v) for v in bev_range)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    if rule == "centre":
        return (boxes[:, 0] >= x0) & (boxes[:, 0] < x1) & (boxes[:, 1] >= y0) & (boxes[:, 1] < y1)
    corners = box_corners_xy(boxes)
    inside = (corners[..., 0] >= x0) & (corners[..., 0] <= x1) & (corners[..., 1] >= y0) & (corners[..., 1] <= y1)
    return inside.all(axis=1) if rule == "all_corners" else inside.any(axis=1)
