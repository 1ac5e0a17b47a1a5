"""Drivable / walkable paths as dense polylines with arc-length queries (pure)."""

from __future__ import annotations

import numpy as np

from trainer.data.synth.geometry import wrap_angle


class Polyline:
    """A path through [N, 2] points, resampled every ``step`` metres for cheap arc-length queries."""

    def __init__(self, points: np.ndarray, step: float = 0.5) -> None:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
            raise ValueError(f"Polyline needs [N>=2, 2] points, got shape {points.shape}")
        seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
        keep = np.concatenate([[True], seg > 1e-9])
        points = points[keep]
        if len(points) < 2:
            raise ValueError("Polyline points must not all coincide")
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
        self.length = float(s[-1])
        self.step = step
        grid = np.linspace(0.0, self.length, max(2, int(np.ceil(self.length / step)) + 1))
        self.s = grid
        self.xy = np.stack([np.interp(grid, s, points[:, 0]), np.interp(grid, s, points[:, 1])], axis=1)
        tangent = np.gradient(self.xy, axis=0)
        self.heading = np.arctan2(tangent[:, 1], tangent[:, 0])

    def position(self, s: float) -> np.ndarray:
        """[2] point at arc length ``s`` (clamped to the ends)."""
        s = float(np.clip(s, 0.0, self.length))
        return np.array([np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1])])

    def heading_at(self, s: float) -> float:
        """Tangent direction (radians) at arc length ``s``."""
        i = int(np.clip(np.searchsorted(self.s, s), 0, len(self.s) - 1))
        return float(self.heading[i])

    def project(self, xy: np.ndarray, s_hint: float, window: float = 12.0) -> float:
        """Arc length of the path point nearest ``xy``, searched within ``window`` m around ``s_hint``."""
        lo = np.searchsorted(self.s, s_hint - window)
        hi = max(lo + 1, np.searchsorted(self.s, s_hint + window))
        d2 = np.sum((self.xy[lo:hi] - xy) ** 2, axis=1)
        return float(self.s[lo + int(np.argmin(d2))])

    def samples(self, s_from: float, distance: float, spacing: float) -> tuple[np.ndarray, np.ndarray]:
        """Arc lengths [K] and points [K, 2] every ``spacing`` m over ``distance`` m ahead of ``s_from``."""
        ahead = np.arange(0.0, distance, spacing)
        s_query = np.clip(s_from + ahead, 0.0, self.length)
        pts = np.stack([np.interp(s_query, self.s, self.xy[:, 0]), np.interp(s_query, self.s, self.xy[:, 1])], 1)
        return ahead, pts

    def offset(self, lateral: float) -> "Polyline":
        """The parallel path ``lateral`` metres to the left (negative: right)."""
        normal = np.stack([-np.sin(self.heading), np.cos(self.heading)], axis=1)
        return Polyline(self.xy + lateral * normal, self.step)


def straight(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """[2, 2] the segment from ``start`` to ``end``."""
    return np.stack([np.asarray(start, float), np.asarray(end, float)])


def bezier_turn(p0: np.ndarray, dir0: np.ndarray, p1: np.ndarray, dir1: np.ndarray, num: int = 24) -> np.ndarray:
    """[num, 2] cubic Bezier leaving ``p0`` along ``dir0`` and arriving at ``p1`` along ``dir1``.

    Control arms of 0.55 x the corner radius make a near-circular quarter turn for perpendicular directions.
    """
    p0, p1, dir0, dir1 = (np.asarray(v, dtype=np.float64) for v in (p0, p1, dir0, dir1))
    arm = 0.55 * np.linalg.norm(p1 - p0) / np.sqrt(2.0)
    if abs(float(wrap_angle(np.arctan2(dir1[1], dir1[0]) - np.arctan2(dir0[1], dir0[0])))) < 1e-3:
        arm = np.linalg.norm(p1 - p0) / 3.0
    c0, c1 = p0 + arm * dir0, p1 - arm * dir1
    t = np.linspace(0.0, 1.0, num)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * c0 + 3 * (1 - t) * t**2 * c1 + t**3 * p1


def lane_change(start: np.ndarray, direction: np.ndarray, lateral: np.ndarray, s_start: float,
                s_change: float, length: float, num: int = 200) -> np.ndarray:
    """[num, 2] a straight drive of ``length`` m that shifts by vector ``lateral`` over ``s_change`` m
    starting at ``s_start`` (smooth-step profile, so the heading changes and returns)."""
    s = np.linspace(0.0, length, num)
    u = np.clip((s - s_start) / max(s_change, 1e-6), 0.0, 1.0)
    blend = u * u * (3.0 - 2.0 * u)
    return np.asarray(start, float) + s[:, None] * np.asarray(direction, float) + blend[:, None] * np.asarray(lateral, float)
