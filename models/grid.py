"""The BEV / voxel grid shared by the data pipeline (voxelisation) and the model.

Every agent is encoded in its own *BEV frame*: origin at the agent's LiDAR (x, y), heading = the
LiDAR's yaw, roll and pitch removed, and the vertical origin at the **ego** LiDAR's height at the
current time. One vertical reference for all agents lets a single ``z_range`` cover vehicles and
infrastructure sensors mounted several metres higher.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(kw_only=True)
class GridConfig:
    """Voxel grid in an agent's BEV frame (metres)."""

    x_range: list[float] = field(default_factory=lambda: [-70.4, 70.4])
    """[min, max) along the heading axis."""
    y_range: list[float] = field(default_factory=lambda: [-40.0, 40.0])
    """[min, max) along the left axis."""
    z_range: list[float] = field(default_factory=lambda: [-3.0, 1.0])
    """[min, max) height relative to the ego LiDAR."""
    voxel_size: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.25])
    """Voxel edge lengths (x, y, z)."""
    max_points_per_voxel: int = 5
    """Points kept per voxel; the rest are dropped by the voxeliser."""
    max_voxels: int = 40000
    """Voxels kept per agent-frame."""

    def __post_init__(self) -> None:
        for name in ("x_range", "y_range", "z_range"):
            lo_hi = list(getattr(self, name))
            if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"grid.{name} must be [min, max] with min < max, got {lo_hi}")
        if len(self.voxel_size) != 3 or min(self.voxel_size) <= 0:
            raise ValueError(f"grid.voxel_size must be 3 positive numbers, got {list(self.voxel_size)}")
        for name, (lo, hi), size in zip("xyz", self.ranges, self.voxel_size):
            cells = (hi - lo) / size
            if abs(cells - round(cells)) > 1e-4:
                raise ValueError(f"grid.{name}_range length {hi - lo} is not a multiple of voxel size {size}")
        if self.max_points_per_voxel < 1 or self.max_voxels < 1:
            raise ValueError("grid.max_points_per_voxel and grid.max_voxels must be >= 1")

    @property
    def ranges(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        return (tuple(self.x_range), tuple(self.y_range), tuple(self.z_range))  # type: ignore[return-value]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Number of voxels along (z, y, x): spconv's spatial shape."""
        return tuple(  # type: ignore[return-value]
            int(round((hi - lo) / s)) for (lo, hi), s in zip(reversed(self.ranges), reversed(self.voxel_size))
        )

    @property
    def coors_range_xyz(self) -> list[float]:
        """[x_min, y_min, z_min, x_max, y_max, z_max], spconv's ``PointToVoxel`` layout."""
        (x0, x1), (y0, y1), (z0, z1) = self.ranges
        return [x0, y0, z0, x1, y1, z1]
