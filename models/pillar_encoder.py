"""PointPillars LiDAR encoder: a PointNet over each voxel's points, max-pooled into pillars, then 2-D convs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.config import ModelConfig
from models.encoder_common import Fp32BatchNorm, apply_mask_token, bev_output_block, check_voxel_coords

POINT_FEATURES = 9
"""x, y, z, intensity, offsets to the voxel's point mean (3), offsets to the pillar centre (x, y)."""


def pillar_point_features(voxels: Tensor, num_points: Tensor, coords: Tensor, voxel_size: list[float],
                          origin_xy: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """voxels [V, P, 4], num_points [V], coords [V, 4] (n, z, y, x) -> (features [V, P, 9], valid [V, P] bool)."""
    valid = torch.arange(voxels.shape[1], device=voxels.device)[None, :] < num_points[:, None]
    pts = voxels * valid[..., None].to(voxels.dtype)
    mean = pts[..., :3].sum(dim=1, keepdim=True) / num_points.clamp_min(1)[:, None, None].to(voxels.dtype)
    centre_x = origin_xy[0] + (coords[:, 3].to(voxels.dtype) + 0.5) * voxel_size[0]
    centre_y = origin_xy[1] + (coords[:, 2].to(voxels.dtype) + 0.5) * voxel_size[1]
    to_centre = pts[..., :2] - torch.stack((centre_x, centre_y), dim=-1)[:, None, :]
    feats = torch.cat((pts, pts[..., :3] - mean, to_centre), dim=-1)
    return feats * valid[..., None].to(feats.dtype), valid


class PillarEncoder(nn.Module):
    """Pillar feature net (linear + BN + ReLU + max over points, then max over the voxels of a column),
    scattered to a dense [N, C, ny, nx] pseudo-image, followed by strided 2-D conv stages."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.grid = config.grid
        chans = config.sparse_channels
        self.pfn_linear = nn.Linear(POINT_FEATURES, chans[0], bias=False)
        self.pfn_norm = Fp32BatchNorm(chans[0])
        self.mask_token = nn.Parameter(torch.zeros(chans[0]))
        stages: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip([chans[0]] + chans[:-1], chans)):
            stride = config.sparse_strides[i]
            stages += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), Fp32BatchNorm(c_out, eps=1e-5),
                       nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                       Fp32BatchNorm(c_out, eps=1e-5), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*stages)
        self.compress = bev_output_block(chans[-1], config.bev_channels)

    def forward(self, voxels: Tensor, num_points: Tensor, coords: Tensor, num_frames: int,
                voxel_mask: Tensor | None = None) -> Tensor:
        """Same contract as ``SparseEncoder.forward``: -> [num_frames, bev_channels, H, W]."""
        check_voxel_coords(coords, num_frames)
        dtype = self.pfn_linear.weight.dtype
        if torch.is_autocast_enabled(voxels.device.type):
            dtype = torch.get_autocast_dtype(voxels.device.type)
        feats, valid = pillar_point_features(voxels.float(), num_points, coords, self.grid.voxel_size,
                                             (self.grid.x_range[0], self.grid.y_range[0]))
        v, p, _ = feats.shape
        hidden = self.pfn_linear(feats.to(self.pfn_linear.weight.dtype))  # [V, P, C]
        flat_valid = valid.reshape(-1)
        normed = hidden.new_zeros(v * p, hidden.shape[-1])
        normed[flat_valid] = self.pfn_norm(hidden.reshape(v * p, -1)[flat_valid]).to(hidden.dtype)
        normed = torch.relu(normed).view(v, p, -1).masked_fill(~valid[..., None], 0.0)
        voxel_feats = apply_mask_token(normed.amax(dim=1), voxel_mask, self.mask_token)
        _, ny, nx = self.grid.shape_zyx
        column = (coords[:, 0].long() * ny + coords[:, 2].long()) * nx + coords[:, 3].long()
        canvas = voxel_feats.new_zeros(num_frames * ny * nx, voxel_feats.shape[1])
        canvas = canvas.scatter_reduce(0, column[:, None].expand_as(voxel_feats), voxel_feats, reduce="amax",
                                       include_self=False)
        image = canvas.view(num_frames, ny, nx, -1).permute(0, 3, 1, 2).to(dtype)
        return self.compress(self.convs(image))
