"""Pure pose and angle helpers (OpenCOOD / CARLA conventions)."""

from __future__ import annotations

import numpy as np


def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Wrap radians into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def x_to_world(pose: list[float] | np.ndarray) -> np.ndarray:
    """[4, 4] sensor-to-world transform of an OpenCOOD pose [x, y, z, roll, yaw, pitch] (degrees).

    Same matrix as OpenCOOD's ``transformation_utils.x_to_world`` (CARLA's rotation order): a point
    ``p`` in the sensor frame is ``T @ [p, 1]`` in the world.
    """
    x, y, z, roll, yaw, pitch = (float(v) for v in pose)
    c_y, s_y = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    c_r, s_r = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    c_p, s_p = np.cos(np.radians(pitch)), np.sin(np.radians(pitch))
    matrix = np.identity(4)
    matrix[:3, 3] = [x, y, z]
    matrix[0, 0] = c_p * c_y
    matrix[0, 1] = c_y * s_p * s_r - s_y * c_r
    matrix[0, 2] = -c_y * s_p * c_r - s_y * s_r
    matrix[1, 0] = s_y * c_p
    matrix[1, 1] = s_y * s_p * s_r + c_y * c_r
    matrix[1, 2] = -s_y * s_p * c_r + c_y * s_r
    matrix[2, 0] = s_p
    matrix[2, 1] = -c_p * s_r
    matrix[2, 2] = c_p * c_r
    return matrix


def world_to_local_xy(points_xy: np.ndarray, origin_xy: np.ndarray, yaw: float) -> np.ndarray:
    """[N, 2] world points -> [N, 2] in a frame at ``origin_xy`` rotated by ``yaw`` (radians)."""
    c, s = np.cos(yaw), np.sin(yaw)
    d = np.asarray(points_xy, dtype=np.float64) - np.asarray(origin_xy, dtype=np.float64)
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def box_corners_xy(boxes: np.ndarray) -> np.ndarray:
    """[K, 4, 2] BEV corners of boxes [K, 7] (x, y, z, l, w, h, yaw), counter-clockwise."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    local = signs[None] * (boxes[:, None, 3:5] / 2.0)
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1] + boxes[:, None, 0]
    y = s * local[..., 0] + c * local[..., 1] + boxes[:, None, 1]
    return np.stack([x, y], axis=-1)
