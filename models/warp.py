"""Warping BEV maps between agent frames with 2-D homogeneous transforms (ego-motion / agent-to-ego)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models.bev import BevGeometry


def normalising_transform(geometry: BevGeometry, *, device=None, dtype=torch.float32) -> Tensor:
    """[3, 3] map metric (x, y, 1) -> normalised grid coordinates (u, v, 1) of ``grid_sample`` (align_corners=False)."""
    sx = 2.0 / (geometry.x_max - geometry.x_min)
    sy = 2.0 / (geometry.y_max - geometry.y_min)
    return torch.tensor([[sx, 0.0, -(geometry.x_max + geometry.x_min) / (geometry.x_max - geometry.x_min)],
                         [0.0, sy, -(geometry.y_max + geometry.y_min) / (geometry.y_max - geometry.y_min)],
                         [0.0, 0.0, 1.0]], device=device, dtype=dtype)


def metric_to_sampling_theta(src_to_dst: Tensor, geometry: BevGeometry) -> Tensor:
    """The ``affine_grid`` theta that resamples a map in the source frame into the destination frame.

    src_to_dst: [N, 3, 3] metric 2-D affine transforms (any invertible affine map, flips and scales
    included). Returns [N, 2, 3]: for every destination pixel's normalised coordinate, the normalised
    coordinate to read in the source map, i.e. ``Nrm @ inv(src_to_dst) @ inv(Nrm)``.
    """
    if src_to_dst.shape[-2:] != (3, 3):
        raise ValueError(f"src_to_dst must be [..., 3, 3], got {tuple(src_to_dst.shape)}")
    work = src_to_dst.to(torch.float64)
    nrm = normalising_transform(geometry, device=work.device, dtype=torch.float64)
    theta = nrm @ torch.linalg.inv(work) @ torch.linalg.inv(nrm)
    return theta[..., :2, :].to(src_to_dst.dtype)


def warp_bev(maps: Tensor, src_to_dst: Tensor, geometry: BevGeometry) -> tuple[Tensor, Tensor]:
    """Resample BEV maps from their source frame into a destination frame (bilinear, zeros outside).

    maps: [N, C, H, W] in the source frame; src_to_dst: [N, 3, 3] metric transforms.
    Returns (warped [N, C, H, W], in_view [N, H, W] bool: destination cells that see the source map).
    """
    n, _, h, w = maps.shape
    theta = metric_to_sampling_theta(src_to_dst.float(), geometry)
    sampling = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    warped = F.grid_sample(maps, sampling.to(maps.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = (sampling.abs() <= 1.0).all(dim=-1)
    return warped, inside


def sample_at_points(maps: Tensor, xy: Tensor, geometry: BevGeometry) -> Tensor:
    """Bilinear read-out of BEV maps at metric points.

    maps: [B, C, H, W]; xy: [B, M, 2] metric (x, y). Returns [B, M, C] (zeros outside the map).
    """
    grid = geometry.metric_to_normalised(xy.to(torch.float32)).unsqueeze(1)  # [B, 1, M, 2]
    sampled = F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.squeeze(2).transpose(1, 2)
