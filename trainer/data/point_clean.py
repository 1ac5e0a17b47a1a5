"""Cleaning one agent-frame's points at conversion time, as the reference loaders do (pure numpy).

- Rows whose x, y or z is not finite are dropped and counted (V2X-Real's ``.bin`` loader drops NaN rows).
- ``zero_intensity``: the intensity column is set to 0 (V2X-Real loads its clouds with zero intensity).
- ``mask_ego_points``: points inside the ego vehicle's own footprint, ``EGO_BOX`` in the agent's LiDAR sensor
  frame, are dropped (OpenCOOD / V2X-Real's ``mask_ego_points``: x in [-1.95, 2.95], y in [-1.1, 1.1], bounds
  included), for every agent as the references do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EGO_BOX = (-1.95, 2.95, -1.1, 1.1)
"""x_min, x_max, y_min, y_max (m, LiDAR sensor frame) of the points ``mask_ego_points`` removes."""


@dataclass(frozen=True)
class CleanedPoints:
    """The points kept and what was removed."""

    points: np.ndarray
    """[N', 4] float32."""
    nonfinite: int
    """Rows dropped because x, y or z was NaN or infinite."""
    ego: int
    """Rows dropped inside ``EGO_BOX`` (0 unless ego masking is on)."""


def clean_points(points: np.ndarray, *, zero_intensity: bool = False, mask_ego_points: bool = False) -> CleanedPoints:
    """[N, 4] sensor-frame points -> the cleaned copy (see the module docstring)."""
    finite = np.isfinite(points[:, :3]).all(axis=1)
    keep = finite.copy()
    ego = 0
    if mask_ego_points:
        x0, x1, y0, y1 = EGO_BOX
        with np.errstate(invalid="ignore"):
            inside = (points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)
        ego = int((inside & finite).sum())
        keep &= ~inside
    out = np.array(points[keep], dtype=np.float32)
    if zero_intensity:
        out[:, 3] = 0.0
    return CleanedPoints(points=out, nonfinite=int((~finite).sum()), ego=ego)
