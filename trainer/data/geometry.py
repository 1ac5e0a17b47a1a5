"""Pure pose / frame geometry for the data pipeline (numpy, float64).

Poses follow OpenCOOD: ``[x, y, z, roll, yaw, pitch]`` with angles in degrees, and
``x_to_world`` is OpenCOOD's (CARLA) sensor-to-world matrix. A *BEV frame* (see models/grid.py)
is an agent's LiDAR (x, y) with heading = LiDAR yaw, roll/pitch removed and a vertical origin
``z_ref`` (the ego LiDAR height at the current time).
"""

from __future__ import annotations

import numpy as np


def x_to_world(pose: np.ndarray) -> np.ndarray:
    """[4, 4] sensor -> world matrix of an OpenCOOD pose ``[x, y, z, roll, yaw, pitch]`` (deg)."""
    x, y, z, roll, yaw, pitch = (float(v) for v in pose)
    c_y, s_y = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    c_r, s_r = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    c_p, s_p = np.cos(np.radians(pitch)), np.sin(np.radians(pitch))
    m = np.identity(4)
    m[0, 3], m[1, 3], m[2, 3] = x, y, z
    m[0, 0] = c_p * c_y
    m[0, 1] = c_y * s_p * s_r - s_y * c_r
    m[0, 2] = -c_y * s_p * c_r - s_y * s_r
    m[1, 0] = s_y * c_p
    m[1, 1] = s_y * s_p * s_r + c_y * c_r
    m[1, 2] = -s_y * s_p * c_r + c_y * s_r
    m[2, 0] = s_p
    m[2, 1] = -c_p * s_r
    m[2, 2] = c_p * c_r
    return m


def se2(x: float, y: float, yaw_rad: float) -> np.ndarray:
    """[3, 3] homogeneous 2-D rigid transform (rotate by ``yaw_rad``, then translate)."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.array([[c, -s, x], [s, c, y], [0.0, 0.0, 1.0]])


def bev_to_world(pose: np.ndarray) -> np.ndarray:
    """[3, 3] SE(2) map from the BEV frame of an agent with OpenCOOD ``pose`` to world (x, y)."""
    return se2(float(pose[0]), float(pose[1]), np.radians(float(pose[4])))


def se2_inverse(m: np.ndarray) -> np.ndarray:
    """[3, 3] inverse of a homogeneous 2-D rigid transform ``[[R, t], [0, 1]]``: ``[[R^T, -R^T t], [0, 1]]``."""
    out = np.identity(3)
    out[:2, :2] = m[:2, :2].T
    out[:2, 2] = -m[:2, :2].T @ m[:2, 2]
    return out


def relative_se2(src_pose: np.ndarray, dst_pose: np.ndarray) -> np.ndarray:
    """[3, 3] map from the BEV frame of ``src_pose`` to the BEV frame of ``dst_pose``."""
    return se2_inverse(bev_to_world(dst_pose)) @ bev_to_world(src_pose)


def world_xy_to_bev(xy: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World points ``[N, 2]`` -> BEV frame of the agent with ``pose`` ``[N, 2]``."""
    m = se2_inverse(bev_to_world(pose))
    return xy @ m[:2, :2].T + m[:2, 2]


def sensor_to_bev_affine(pose: np.ndarray, z_ref: float) -> np.ndarray:
    """[3, 4] affine ``[R | t]`` taking sensor-frame xyz of ``pose`` to that agent's BEV frame.

    The full 3-D pose (roll, pitch included) takes a point to the world; the BEV frame then keeps
    only yaw, with height measured from ``z_ref``.
    """
    to_world = x_to_world(pose)
    c, s = np.cos(np.radians(float(pose[4]))), np.sin(np.radians(float(pose[4])))
    out = np.zeros((3, 4))
    out[:2, :3] = np.array([[c, s], [-s, c]]) @ to_world[:2, :3]  # undo the yaw; the xy origins coincide
    out[2, :3] = to_world[2, :3]
    out[2, 3] = to_world[2, 3] - z_ref
    return out


def sensor_to_bev(points: np.ndarray, pose: np.ndarray, z_ref: float, *, dtype=np.float64,
                  out: np.ndarray | None = None) -> np.ndarray:
    """LiDAR points ``[N, C >= 3]`` in the sensor frame of ``pose`` -> that agent's BEV frame ``[N, C]``.

    See :func:`sensor_to_bev_affine`. Extra columns (intensity) are copied. ``dtype`` is the output
    (and arithmetic) type; float32 is exact enough because the BEV frame shares the sensor's origin.
    ``out`` (``[N, C]`` of ``dtype``), when given, receives the result.
    """
    affine = sensor_to_bev_affine(pose, z_ref)
    rotate, shift = np.identity(points.shape[1], dtype=dtype), np.zeros(points.shape[1], dtype=dtype)
    rotate[:3, :3], shift[:3] = affine[:, :3], affine[:, 3]
    out = np.matmul(np.asarray(points, dtype=dtype), rotate.T, out=out)  # one GEMM, identity on extra columns
    out += shift
    return out


def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Angles (radians) wrapped to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi
