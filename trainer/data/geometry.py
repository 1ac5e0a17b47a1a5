"""Pure pose / frame geometry for the data pipeline (numpy, float64).

Poses follow OpenCOOD: ``[x, y, z, roll, yaw, pitch]`` with angles in degrees, and
``x_to_world`` is OpenCOOD's (CARLA) sensor-to-world matrix. A *BEV frame* (see models/grid.py)
is an agent's LiDAR (x, y) with heading = LiDAR yaw, roll/pitch removed and a vertical origin
``z_ref`` (the ego LiDAR height at the current time).
"""

from __future__ import annotations

import numpy as np


def x_to_world(pose: np.ndarray) -> np.ndarray:
    """[..., 4, 4] sensor -> world matrices of OpenCOOD poses ``[..., 6]`` = ``[x, y, z, roll, yaw, pitch]`` (deg)."""
    pose = np.asarray(pose, dtype=np.float64)
    roll, yaw, pitch = np.radians(pose[..., 3]), np.radians(pose[..., 4]), np.radians(pose[..., 5])
    c_y, s_y = np.cos(yaw), np.sin(yaw)
    c_r, s_r = np.cos(roll), np.sin(roll)
    c_p, s_p = np.cos(pitch), np.sin(pitch)
    m = np.zeros(pose.shape[:-1] + (4, 4))
    m[..., :3, 3] = pose[..., :3]
    m[..., 3, 3] = 1.0
    m[..., 0, 0] = c_p * c_y
    m[..., 0, 1] = c_y * s_p * s_r - s_y * c_r
    m[..., 0, 2] = -c_y * s_p * c_r - s_y * s_r
    m[..., 1, 0] = s_y * c_p
    m[..., 1, 1] = s_y * s_p * s_r + c_y * c_r
    m[..., 1, 2] = -s_y * s_p * c_r + c_y * s_r
    m[..., 2, 0] = s_p
    m[..., 2, 1] = -c_p * s_r
    m[..., 2, 2] = c_p * c_r
    return m


def se2(x, y, yaw_rad) -> np.ndarray:
    """[..., 3, 3] homogeneous 2-D rigid transforms (rotate by ``yaw_rad``, then translate); arguments broadcast."""
    x, y, yaw_rad = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, yaw_rad)))
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    m = np.zeros(x.shape + (3, 3))
    m[..., 0, 0], m[..., 0, 1], m[..., 0, 2] = c, -s, x
    m[..., 1, 0], m[..., 1, 1], m[..., 1, 2] = s, c, y
    m[..., 2, 2] = 1.0
    return m


def bev_to_world(pose: np.ndarray) -> np.ndarray:
    """[..., 3, 3] SE(2) maps from the BEV frames of agents with OpenCOOD poses ``[..., 6]`` to world (x, y)."""
    pose = np.asarray(pose, dtype=np.float64)
    return se2(pose[..., 0], pose[..., 1], np.radians(pose[..., 4]))


def se2_inverse(m: np.ndarray) -> np.ndarray:
    """[..., 3, 3] inverses of 2-D rigid transforms ``[[R, t], [0, 1]]``: ``[[R^T, -R^T t], [0, 1]]``."""
    rot_t = np.swapaxes(m[..., :2, :2], -1, -2)
    out = np.zeros(m.shape)
    out[..., :2, :2] = rot_t
    out[..., :2, 2] = -(rot_t @ m[..., :2, 2:])[..., 0]
    out[..., 2, 2] = 1.0
    return out


def relative_se2(src_pose: np.ndarray, dst_pose: np.ndarray) -> np.ndarray:
    """[..., 3, 3] maps from the BEV frames of ``src_pose`` to those of ``dst_pose`` (``[..., 6]``, broadcast)."""
    return se2_inverse(bev_to_world(dst_pose)) @ bev_to_world(src_pose)


def world_xy_to_bev(xy: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World points ``[N, 2]`` -> BEV frame of the agent with ``pose`` ``[N, 2]``."""
    m = se2_inverse(bev_to_world(pose))
    return xy @ m[:2, :2].T + m[:2, 2]


def sensor_to_bev_affine(pose: np.ndarray, z_ref) -> np.ndarray:
    """[..., 3, 4] affines ``[R | t]`` taking sensor-frame xyz of ``pose`` (``[..., 6]``) to that agent's BEV frame.

    The full 3-D pose (roll, pitch included) takes a point to the world; the BEV frame then keeps
    only yaw, with height measured from ``z_ref`` (a scalar or broadcast against ``pose[..., 0]``).
    """
    to_world = x_to_world(pose)
    yaw = np.radians(np.asarray(pose, dtype=np.float64)[..., 4])
    c, s = np.cos(yaw), np.sin(yaw)
    undo_yaw = np.zeros(yaw.shape + (2, 2))
    undo_yaw[..., 0, 0], undo_yaw[..., 0, 1], undo_yaw[..., 1, 0], undo_yaw[..., 1, 1] = c, s, -s, c
    out = np.zeros(yaw.shape + (3, 4))
    out[..., :2, :3] = undo_yaw @ to_world[..., :2, :3]  # the xy origins coincide: no xy shift
    out[..., 2, :3] = to_world[..., 2, :3]
    out[..., 2, 3] = to_world[..., 2, 3] - z_ref
    return out


def apply_affine(points: np.ndarray, affine: np.ndarray, *, dtype=np.float64,
                 out: np.ndarray | None = None) -> np.ndarray:
    """``affine`` ([3, 4]) applied to the xyz of ``points`` ``[N, C >= 3]`` -> ``[N, C]``, extra columns copied.

    ``dtype`` is the output (and arithmetic) type; ``out`` (``[N, C]`` of ``dtype``), when given,
    receives the result.
    """
    rotate_t = np.identity(points.shape[1], dtype=dtype)  # [C, C], identity on the extra columns
    rotate_t[:3, :3] = affine[:, :3].T
    out = np.matmul(np.asarray(points, dtype=dtype), rotate_t, out=out)  # one GEMM
    for axis in np.flatnonzero(affine[:, 3]):  # a column add each, not an [N, C] broadcast (~7x slower)
        out[:, axis] += float(affine[axis, 3])  # a Python float computes in ``dtype``
    return out


def sensor_to_bev(points: np.ndarray, pose: np.ndarray, z_ref: float, *, dtype=np.float64,
                  out: np.ndarray | None = None) -> np.ndarray:
    """LiDAR points ``[N, C >= 3]`` in the sensor frame of ``pose`` -> that agent's BEV frame ``[N, C]``.

    See :func:`sensor_to_bev_affine` and :func:`apply_affine`; float32 is exact enough because the
    BEV frame shares the sensor's origin.
    """
    return apply_affine(points, sensor_to_bev_affine(pose, z_ref), dtype=dtype, out=out)


def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Angles (radians) wrapped to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def box_corners_xy(boxes: np.ndarray) -> np.ndarray:
    """[K, 4, 2] BEV corners of boxes [K, 7] (x, y, z, l, w, h, yaw), counter-clockwise."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    local = signs[None] * (boxes[:, None, 3:5] / 2.0)
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1] + boxes[:, None, 0]
    y = s * local[..., 0] + c * local[..., 1] + boxes[:, None, 1]
    return np.stack([x, y], axis=-1)
