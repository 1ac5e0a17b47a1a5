"""Pieces shared by the LiDAR encoders: dtype-robust batch norm, mask-token substitution, BEV output block."""

from __future__ import annotations

import torch
from torch import Tensor, nn


BN_MOMENTUM = 0.1
"""Running-statistics momentum of every batch norm. OpenPCDet's sparse backbones use 0.01, which suits
runs of tens of thousands of steps; at 0.01 the statistics still carry 5% of their initial values
after 300 steps, so a short run evaluates with statistics that lag its weights. At 0.1 the lag is
about 10 steps."""


class Fp32BatchNorm(nn.Module):
    """Batch norm over channel dim 1 of [V, C] or [N, C, H, W] features, computed in fp32 whatever the
    parameter / buffer dtypes are.

    DeepSpeed's bf16 mode casts parameters but not buffers, and ``model.to(torch.bfloat16)`` casts both;
    this layer works in either case (and inside the sparse encoder's fp32 island). Running statistics are
    updated in place, cast to the buffers' dtype.
    """

    def __init__(self, channels: int, *, eps: float = 1e-3, momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        """x: [V, C] or [N, C, H, W] -> the same shape, in x's dtype."""
        x32 = x.float()
        dims = [d for d in range(x.dim()) if d != 1]
        count = x.numel() // x.shape[1]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        if self.training and count > 1:
            mean = x32.mean(dim=dims)
            var = x32.var(dim=dims, unbiased=False)
            with torch.no_grad():
                unbiased = var * count / (count - 1)
                self.running_mean.copy_(self.running_mean.float().lerp(mean, self.momentum))
                self.running_var.copy_(self.running_var.float().lerp(unbiased, self.momentum))
        else:
            mean, var = self.running_mean.float(), self.running_var.float()
        scale = torch.rsqrt(var + self.eps) * self.weight.float()
        y = (x32 - mean.view(shape)) * scale.view(shape) + self.bias.float().view(shape)
        return y.to(x.dtype)


def apply_mask_token(features: Tensor, voxel_mask: Tensor | None, token: Tensor) -> Tensor:
    """Replace the rows of masked voxels by a learnable token (coordinates are untouched by the caller).

    features: [V, C]; voxel_mask: [V] bool (True = masked) or None; token: [C].
    """
    if voxel_mask is None:
        return features
    if voxel_mask.shape != features.shape[:1] or voxel_mask.dtype != torch.bool:
        raise ValueError(f"voxel_mask must be a [V]={features.shape[0]} bool tensor, got "
                         f"{tuple(voxel_mask.shape)} {voxel_mask.dtype}")
    return torch.where(voxel_mask[:, None], token.to(features.dtype).expand_as(features), features)


def bev_output_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv + BN + ReLU mapping an encoder's BEV map to the model's BEV width."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), Fp32BatchNorm(out_channels, eps=1e-5),
                         nn.ReLU(inplace=True))


def check_voxel_coords(voxel_coords: Tensor, num_frames: int) -> None:
    """Validate that the flat agent-frame indices in ``voxel_coords[:, 0]`` lie in [0, num_frames)."""
    if voxel_coords.ndim != 2 or voxel_coords.shape[1] != 4:
        raise ValueError(f"voxel_coords must be [V, 4] (n, z, y, x), got {tuple(voxel_coords.shape)}")
    if voxel_coords.shape[0] and (int(voxel_coords[:, 0].min()) < 0 or int(voxel_coords[:, 0].max()) >= num_frames):
        raise ValueError(f"voxel_coords[:, 0] must index agent-frames in [0, {num_frames})")
