"""Vectorised LiDAR simulation: ray casting against oriented boxes and the ground plane (numpy).

All rays of a scan leave the sensor origin; the sensor frame is the LiDAR pose with roll = pitch = 0
(x forward, y left, z up). The nearest hit wins, so occlusion is physical.
"""

from __future__ import annotations

import numpy as np

from trainer.data.synth.config import LidarConfig
from trainer.data.synth.geometry import wrap_angle

GROUND_REFLECTIVITY = 0.15
"""Asphalt / concrete reflectivity of the ground plane."""
INTENSITY_NOISE_STD = 0.02
"""Gaussian noise added to the intensity."""


class RayGrid:
    """Unit ray directions [E, A, 3] of a spinning LiDAR in its sensor frame (beams ascending, azimuth from -pi)."""

    def __init__(self, cfg: LidarConfig) -> None:
        self.cfg = cfg
        self.elevations = np.radians(np.linspace(cfg.elevation_min_deg, cfg.elevation_max_deg, cfg.num_beams))
        self.azimuth_step = 2.0 * np.pi / cfg.num_columns
        self.azimuths = -np.pi + self.azimuth_step * np.arange(cfg.num_columns)
        ce, se = np.cos(self.elevations)[:, None], np.sin(self.elevations)[:, None]
        ca, sa = np.cos(self.azimuths)[None], np.sin(self.azimuths)[None]
        self.dirs = np.stack(np.broadcast_arrays(ce * ca, ce * sa, se * np.ones_like(ca)), axis=-1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.dirs.shape[:2]


def ray_box_hits(origin: np.ndarray, dirs: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slab test of rays against one yaw-oriented box.

    Args:
        origin: [3] ray origin (shared by all rays).
        dirs: [..., 3] unit directions.
        box: [7] (x, y, z_centre, l, w, h, yaw) in the same frame.
    Returns:
        t: [...] distance to the entry point (``inf`` for a miss, or when the origin is inside the box).
        cos_incidence: [...] |cos| of the angle between the ray and the face it enters.
    """
    dirs = np.asarray(dirs, dtype=np.float64)
    return _slab(np.asarray(origin, dtype=np.float64), dirs[..., 0], dirs[..., 1], dirs[..., 2],
                 np.asarray(box, dtype=np.float64))


def _slab(origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray,
          box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ray_box_hits`` on direction components [R] (the hot loop of a scan)."""
    c, s = np.cos(box[6]), np.sin(box[6])
    rx, ry, rz = origin[0] - box[0], origin[1] - box[1], origin[2] - box[2]
    ox, oy = c * rx + s * ry, -s * rx + c * ry
    lx, ly = c * dx + s * dy, -s * dx + c * dy
    t_lo, t_hi, comps = [], [], (lx, ly, dz)
    with np.errstate(divide="ignore", invalid="ignore"):
        for o, d, half in zip((ox, oy, rz), comps, box[3:6] / 2.0):
            inv = 1.0 / d
            t1, t2 = (-half - o) * inv, (half - o) * inv
            t_lo.append(np.minimum(t1, t2))
            t_hi.append(np.maximum(t1, t2))
    t_near = np.maximum(np.maximum(t_lo[0], t_lo[1]), t_lo[2])
    t_far = np.minimum(np.minimum(t_hi[0], t_hi[1]), t_hi[2])
    cos_inc = np.where(t_near == t_lo[0], np.abs(lx), np.where(t_near == t_lo[1], np.abs(ly), np.abs(dz)))
    hit = (t_near <= t_far) & (t_near > 0.0)
    return np.where(hit, t_near, np.inf), cos_inc


def _ray_windows(grid: RayGrid, boxes: np.ndarray) -> list[tuple[int, int, np.ndarray] | None]:
    """Per box [K, 7] (sensor frame): (first beam, end beam, azimuth column indices) of the rays that can
    reach it, or None when no ray can (out of range, or outside the beam fan)."""
    cx, cy, cz, length, width, height, yaw = boxes.T
    half_diag = 0.5 * np.hypot(length, width)
    dist = np.hypot(cx, cy)
    c, s = np.cos(yaw), np.sin(yaw)
    inside = (np.abs(-c * cx - s * cy) <= length / 2) & (np.abs(s * cx - c * cy) <= width / 2)
    near = np.maximum(dist - half_diag, 1e-3)
    far = dist + half_diag
    z_lo, z_hi = cz - height / 2, cz + height / 2
    el_lo = np.arctan2(z_lo, np.where(z_lo < 0, near, far))
    el_hi = np.arctan2(z_hi, np.where(z_hi > 0, near, far))
    el_lo = np.where(inside & (z_lo < 0), -np.pi / 2, el_lo)
    el_hi = np.where(inside & (z_hi > 0), np.pi / 2, el_hi)
    beam_lo = np.searchsorted(grid.elevations, el_lo)
    beam_hi = np.searchsorted(grid.elevations, el_hi, "right")
    sx = np.array([1, -1, -1, 1])[None] * (length / 2)[:, None]
    sy = np.array([1, 1, -1, -1])[None] * (width / 2)[:, None]
    corner_az = np.arctan2(cy[:, None] + s[:, None] * sx + c[:, None] * sy, cx[:, None] + c[:, None] * sx - s[:, None] * sy)
    centre_az = np.arctan2(cy, cx)
    rel = wrap_angle(corner_az - centre_az[:, None])
    first = np.floor((centre_az + rel.min(axis=1) + np.pi) / grid.azimuth_step).astype(int)
    last = np.ceil((centre_az + rel.max(axis=1) + np.pi) / grid.azimuth_step).astype(int)
    whole = inside | (half_diag >= dist)
    usable = (dist - half_diag <= grid.cfg.range_max) & (beam_lo < beam_hi)
    n_az = grid.shape[1]
    all_cols = np.arange(n_az)
    return [
        (int(beam_lo[k]), int(beam_hi[k]), all_cols if whole[k] else np.arange(first[k], last[k] + 1) % n_az)
        if usable[k] else None
        for k in range(len(boxes))
    ]


def cast_scan(grid: RayGrid, sensor_xyz: np.ndarray, sensor_yaw: float, boxes: np.ndarray,
              reflectivity: np.ndarray, rng: np.random.Generator, self_box: np.ndarray | None = None) -> np.ndarray:
    """One LiDAR sweep in the world.

    Args:
        grid: the sensor's rays.
        sensor_xyz: [3] LiDAR position in the world (ground at z = 0).
        sensor_yaw: LiDAR heading (radians).
        boxes: [K, 7] world boxes (x, y, z_centre, l, w, h, yaw) the rays can hit; exclude the carrier's own body.
        reflectivity: [K] material reflectivity of each box in [0, 1].
        rng: source of range noise, dropout and intensity noise.
        self_box: [7] the carrier's body (world); returns inside its footprint are removed.
    Returns:
        [N, 4] float32 (x, y, z, intensity) in the sensor frame.
    """
    cfg = grid.cfg
    local = _to_sensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 7), sensor_xyz, sensor_yaw)
    n_el, n_az = grid.shape
    down = grid.elevations < 0
    t_ground = np.where(down, -sensor_xyz[2] / np.where(down, np.sin(grid.elevations), -1.0), np.inf)
    t_best = np.repeat(t_ground, n_az)
    cos_best = np.repeat(np.abs(np.sin(grid.elevations)), n_az)
    refl_best = np.full(n_el * n_az, GROUND_REFLECTIVITY)
    flat_dirs = grid.dirs.reshape(-1, 3)
    dx, dy, dz = flat_dirs[:, 0], flat_dirs[:, 1], flat_dirs[:, 2]
    origin = np.zeros(3)
    for k, window in enumerate(_ray_windows(grid, local)):
        if window is None:
            continue
        beam_lo, beam_hi, cols = window
        rays = (np.arange(beam_lo, beam_hi)[:, None] * n_az + cols[None]).ravel()
        t, cos_inc = _slab(origin, dx[rays], dy[rays], dz[rays], local[k])
        closer = t < t_best[rays]
        rays = rays[closer]
        t_best[rays] = t[closer]
        cos_best[rays] = cos_inc[closer]
        refl_best[rays] = reflectivity[k]
    noisy = t_best + rng.normal(0.0, cfg.range_noise_std, size=t_best.shape)
    keep = (t_best <= cfg.range_max) & (rng.random(t_best.shape) >= cfg.dropout) & (noisy > 0.0)
    intensity = refl_best * (0.25 + 0.75 * cos_best) * np.exp(-np.minimum(t_best, 1e3) / 250.0)
    intensity = np.clip(intensity + rng.normal(0.0, INTENSITY_NOISE_STD, size=t_best.shape), 0.0, 1.0)
    xyz = flat_dirs[keep] * noisy[keep][:, None]
    points = np.concatenate([xyz, intensity[keep][:, None]], axis=1)
    if self_box is not None:
        body = _to_sensor(np.asarray(self_box, dtype=np.float64).reshape(1, 7), sensor_xyz, sensor_yaw)[0]
        c, s = np.cos(body[6]), np.sin(body[6])
        px, py = points[:, 0] - body[0], points[:, 1] - body[1]
        inside = (np.abs(c * px + s * py) <= body[3] / 2) & (np.abs(-s * px + c * py) <= body[4] / 2)
        points = points[~inside]
    return points.astype(np.float32)


def _to_sensor(boxes: np.ndarray, sensor_xyz: np.ndarray, sensor_yaw: float) -> np.ndarray:
    """[K, 7] world boxes -> the sensor frame (translation, then rotation by -yaw)."""
    c, s = np.cos(sensor_yaw), np.sin(sensor_yaw)
    d = boxes[:, :3] - np.asarray(sensor_xyz, dtype=np.float64)
    out = boxes.copy()
    out[:, 0] = c * d[:, 0] + s * d[:, 1]
    out[:, 1] = -s * d[:, 0] + c * d[:, 1]
    out[:, 2] = d[:, 2]
    out[:, 6] = wrap_angle(boxes[:, 6] - sensor_yaw)
    return out
