"""Pure pose and angle helpers of the generator (the pose matrix and angle wrap are the data pipeline's)."""

from __future__ import annotations

import numpy as np

from trainer.data.geometry import box_corners_xy, wrap_angle, x_to_world

__all__ = ["box_corners_xy", "world_to_local_xy", "wrap_angle", "x_to_world"]


def world_to_local_xy(points_xy: np.ndarray, origin_xy: np.ndarray, yaw: float) -> np.ndarray:
    """[N, 2] world points -> [N, 2] in a frame at ``origin_xy`` rotated by ``yaw`` (radians)."""
    c, s = np.cos(yaw), np.sin(yaw)
    d = np.asarray(points_xy, dtype=np.float64) - np.asarray(origin_xy, dtype=np.float64)
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)
