"""SECOND-like sparse 3-D LiDAR encoder on spconv, run as an fp32 island, with height compression to BEV."""

from __future__ import annotations

import spconv.pytorch as spconv
import torch
from spconv.core import ConvAlgo
from torch import Tensor, nn

from models.config import ModelConfig
from models.encoder_common import Fp32BatchNorm, apply_mask_token, bev_output_block, check_voxel_coords
from models.grid import GridConfig


VOXEL_FEATURES = 7
"""Mean (x, y, z, intensity) of a voxel's points, and that mean's offset from the voxel centre (x, y, z)."""


def voxel_mean_features(voxels: Tensor, num_points: Tensor, coords: Tensor, grid: GridConfig) -> Tensor:
    """voxels [V, P, 4] zero-padded points, num_points [V], coords [V, 4] (n, z, y, x) -> [V, 7] fp32.

    The offsets are in voxel edges (-0.5..0.5 inside the voxel). Convolutions are translation-equivariant,
    so absolute coordinates alone cannot tell them where in its voxel a point lies; at voxels of 0.4-0.8 m
    that sub-voxel position is what places a pedestrian's box (as PointPillars' pillar-centre offsets do).
    """
    counts = num_points.clamp_min(1).to(torch.float32)[:, None]
    mean = voxels.float().sum(dim=1) / counts
    lower = torch.tensor([lo for lo, _ in grid.ranges], device=voxels.device)
    size = torch.tensor(grid.voxel_size, device=voxels.device)
    centre = lower + (coords[:, [3, 2, 1]].float() + 0.5) * size  # (x, y, z) of each voxel's centre
    return torch.cat((mean, (mean[:, :3] - centre) / size), dim=1)


def _conv_block(conv: spconv.SparseModule, channels: int) -> list[nn.Module]:
    return [conv, Fp32BatchNorm(channels), nn.ReLU()]


class SparseEncoder(nn.Module):
    """Voxel features (point mean + centre offset) -> SubMConv3d / SparseConv3d stages -> dense BEV maps.

    Stage 0 runs two submanifold convs at voxel resolution; every later stage downsamples with a strided
    SparseConv3d (z by 2 while the height is > 1, x/y by ``sparse_strides``) then one submanifold conv.
    The height axis is folded into channels and a 1x1 conv maps to ``bev_channels``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.grid = config.grid
        self.spatial_shape = list(config.grid.shape_zyx)
        chans = config.sparse_channels
        layers: list[nn.Module] = []
        layers += _conv_block(spconv.SubMConv3d(VOXEL_FEATURES, chans[0], 3, padding=1, bias=False,
                                                indice_key="subm0"), chans[0])
        layers += _conv_block(spconv.SubMConv3d(chans[0], chans[0], 3, padding=1, bias=False, indice_key="subm0"),
                              chans[0])
        depth = self.spatial_shape[0]
        for i in range(1, len(chans)):
            z_stride = 2 if depth > 1 else 1
            stride = (z_stride, config.sparse_strides[i], config.sparse_strides[i])
            layers += _conv_block(spconv.SparseConv3d(chans[i - 1], chans[i], 3, stride=stride, padding=1,
                                                      bias=False, indice_key=f"down{i}"), chans[i])
            layers += _conv_block(spconv.SubMConv3d(chans[i], chans[i], 3, padding=1, bias=False,
                                                    indice_key=f"subm{i}"), chans[i])
            depth = (depth - 1) // z_stride + 1
        self.net = spconv.SparseSequential(*layers)
        self.out_depth = depth
        self.bev_hw = config.bev_shape
        self.mask_token = nn.Parameter(torch.zeros(VOXEL_FEATURES))
        self.compress = bev_output_block(chans[-1] * depth, config.bev_channels)
        self._convs = [m for m in self.net.modules() if isinstance(m, spconv.conv.SparseConvolution)]
        self._cuda_algo = self._convs[0].algo

    def _select_algo(self, device: torch.device) -> None:
        """spconv's implicit-GEMM kernels need CUDA; the CPU path must use the native algorithm."""
        algo = ConvAlgo.Native if device.type != "cuda" else self._cuda_algo
        for conv in self._convs:
            conv.algo = algo

    def _run_sparse_fp32(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        """Run the sparse stages in fp32 (spconv has no bf16 kernel).

        Each convolution gets an up-cast of its weight (a differentiable cast, so the gradient lands on
        the stored weight in its own dtype) through spconv's ``_conv_forward`` (spconv 2.3), the same
        call its ``forward`` makes with ``self.weight``. The module's parameters are never swapped, so
        parameters that a sharding wrapper (ZeRO-3) has gathered in place stay the ones used. Dense
        layers (BatchNorm, ReLU) run on the features, as ``SparseSequential`` does.
        """
        for layer in self.net:
            if isinstance(layer, spconv.conv.SparseConvolution):
                x = layer._conv_forward(
                    layer.training, x, layer.weight.float(), None if layer.bias is None else layer.bias.float(),
                    name=layer.name, sparse_unique_name=layer._sparse_unique_name, act_type=layer.act_type,
                    act_alpha=layer.act_alpha, act_beta=layer.act_beta,
                )
            elif x.indices.shape[0] != 0:
                x = x.replace_feature(layer(x.features))
        return x

    def forward(self, voxels: Tensor, num_points: Tensor, coords: Tensor, num_frames: int,
                voxel_mask: Tensor | None = None) -> Tensor:
        """voxels [V, P, 4], num_points [V], coords [V, 4] (n, z, y, x), voxel_mask [V] bool or None
        (True = replace by the mask token) -> BEV maps [num_frames, bev_channels, H, W]."""
        check_voxel_coords(coords, num_frames)
        device = voxels.device
        out_dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
                     else self.compress[0].weight.dtype)
        self._select_algo(device)
        with torch.autocast(device_type=device.type, enabled=False):
            feats = voxel_mean_features(voxels, num_points, coords, self.grid)
            feats = apply_mask_token(feats, voxel_mask, self.mask_token.float())
            if feats.shape[0] == 0:  # nothing seen at all: spconv cannot build an empty rulebook
                channels = self.compress[0].in_channels // self.out_depth
                dense = feats.new_zeros(num_frames, channels, self.out_depth, *self.bev_hw)
                return self.compress(dense.flatten(1, 2).to(out_dtype))
            x = spconv.SparseConvTensor(feats, coords.int(), self.spatial_shape, num_frames)
            dense = self._run_sparse_fp32(x).dense()  # [N, C, D, H, W]
        bev = dense.flatten(1, 2).to(out_dtype)
        return self.compress(bev)
