"""BEV map geometry: metric coordinates <-> cell indices of the [H, W] maps (H along y, W along x)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.grid import GridConfig


@dataclass(frozen=True)
class BevGeometry:
    """The BEV map grid: axis-aligned cells of ``cell_x`` x ``cell_y`` metres covering the grid's x/y range."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    cell_x: float
    cell_y: float
    height: int
    width: int
    z_center: float
    """Middle of the grid's z range: the vertical reference of cell centres."""

    @classmethod
    def from_grid(cls, grid: GridConfig, stride: int) -> "BevGeometry":
        """Geometry of BEV maps that are ``stride`` voxels per cell along x and y."""
        (x0, x1), (y0, y1), (z0, z1) = grid.ranges
        _, ny, nx = grid.shape_zyx
        if ny % stride or nx % stride:
            raise ValueError(f"stride {stride} does not divide the {ny}x{nx} voxel grid")
        return cls(x_min=x0, y_min=y0, x_max=x1, y_max=y1, cell_x=grid.voxel_size[0] * stride,
                   cell_y=grid.voxel_size[1] * stride, height=ny // stride, width=nx // stride,
                   z_center=0.5 * (z0 + z1))

    def metric_to_cell(self, xy: Tensor) -> Tensor:
        """[..., 2] metric (x, y) -> [..., 2] continuous (col, row); integer + 0.5 is a cell centre."""
        col = (xy[..., 0] - self.x_min) / self.cell_x
        row = (xy[..., 1] - self.y_min) / self.cell_y
        return torch.stack((col, row), dim=-1)

    def cell_to_metric(self, col_row: Tensor) -> Tensor:
        """Inverse of ``metric_to_cell``."""
        x = col_row[..., 0] * self.cell_x + self.x_min
        y = col_row[..., 1] * self.cell_y + self.y_min
        return torch.stack((x, y), dim=-1)

    def cell_centres(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """[2, H, W] metric (x, y) of every cell centre."""
        xs = self.x_min + (torch.arange(self.width, device=device, dtype=dtype) + 0.5) * self.cell_x
        ys = self.y_min + (torch.arange(self.height, device=device, dtype=dtype) + 0.5) * self.cell_y
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack((grid_x, grid_y), dim=0)

    def inside(self, xy: Tensor) -> Tensor:
        """[..., 2] metric (x, y) -> [...] bool, True inside [min, max) on both axes."""
        return ((xy[..., 0] >= self.x_min) & (xy[..., 0] < self.x_max)
                & (xy[..., 1] >= self.y_min) & (xy[..., 1] < self.y_max))

    def metric_to_normalised(self, xy: Tensor) -> Tensor:
        """[..., 2] metric (x, y) -> ``grid_sample`` coordinates (align_corners=False: -1/+1 are the map edges)."""
        u = (xy[..., 0] - self.x_min) / (self.x_max - self.x_min) * 2 - 1
        v = (xy[..., 1] - self.y_min) / (self.y_max - self.y_min) * 2 - 1
        return torch.stack((u, v), dim=-1)
