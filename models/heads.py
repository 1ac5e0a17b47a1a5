"""Task heads on the fused BEV feature Z: detection (CenterPoint), trajectory prediction, reconstruction."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from models.bev import BevGeometry
from models.box_coding import BOX_CODE_SIZE
from models.encoder_common import Fp32BatchNorm

HEATMAP_PRIOR = 0.1
"""Initial heatmap probability (bias init), as in CenterNet / CenterPoint."""


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), Fp32BatchNorm(c_out, eps=1e-5), nn.ReLU(inplace=True))


class HeadNeck(nn.Module):
    """Z [B, C, H, W] -> [B, C, H*f, W*f]: a stride-f transposed convolution + batch norm + ReLU
    (CenterPoint's up-sampling neck); the identity for f = 1."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.up = nn.Identity() if factor == 1 else nn.Sequential(
            nn.ConvTranspose2d(channels, channels, factor, stride=factor, bias=False),
            Fp32BatchNorm(channels, eps=1e-5), nn.ReLU(inplace=True))

    def forward(self, z: Tensor) -> Tensor:
        return self.up(z)


class DetectionHead(nn.Module):
    """Per-class centre heatmap logits [B, K, H, W]; box codes (see ``models.box_coding``) [B, 8, H, W], or with
    ``class_heads`` [B, K*8, H, W] from one heatmap + regression branch per class (CenterPoint's separate
    heads per class group, here one class per group); and, with ``iou_branch``, IoU logits [B, 1, H, W]: the
    predicted BEV IoU of each cell's decoded box with its object (IoU-aware scoring, AFDetV2), else None."""

    def __init__(self, channels: int, hidden: int, num_classes: int, *, iou_branch: bool = False,
                 class_heads: bool = False) -> None:
        super().__init__()
        groups = num_classes if class_heads else 1
        self.shared = conv_bn_relu(channels, hidden)
        self.heatmap = nn.ModuleList(nn.Sequential(conv_bn_relu(hidden, hidden), nn.Conv2d(hidden, num_classes // groups, 1))
                                     for _ in range(groups))
        self.regression = nn.ModuleList(nn.Sequential(conv_bn_relu(hidden, hidden), nn.Conv2d(hidden, BOX_CODE_SIZE, 1))
                                        for _ in range(groups))
        self.iou = nn.Sequential(conv_bn_relu(hidden, hidden), nn.Conv2d(hidden, 1, 1)) if iou_branch else None
        for branch in self.heatmap:
            nn.init.constant_(branch[-1].bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        x = self.shared(z)
        heatmap = torch.cat([branch(x) for branch in self.heatmap], dim=1)
        box_codes = torch.cat([branch(x) for branch in self.regression], dim=1)
        return heatmap, box_codes, None if self.iou is None else self.iou(x)


class PredictionHead(nn.Module):
    """K-mode future trajectories per cell, relative to the object centre at that cell, plus mode logits, and
    (``past_steps`` > 0) the object's past positions at the history frames before now.

    Steps are predicted as displacements and accumulated (the past ones backwards from now), so trajectories
    start near the object. Returns (trajectories [B, K, T_f, 2, H, W] metres, mode_logits [B, K, H, W],
    past [B, S, 2, H, W] metres from the centre, oldest frame first, or None without ``past_steps``).
    """

    def __init__(self, channels: int, hidden: int, num_modes: int, future_steps: int, past_steps: int = 0) -> None:
        super().__init__()
        self.num_modes, self.future_steps, self.past_steps = num_modes, future_steps, past_steps
        self.body = nn.Sequential(conv_bn_relu(channels, hidden), conv_bn_relu(hidden, hidden))
        self.out = nn.Conv2d(hidden, num_modes * (future_steps * 2 + 1) + past_steps * 2, 1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        b, _, h, w = z.shape
        raw = self.out(self.body(z))
        k, t, s = self.num_modes, self.future_steps, self.past_steps
        steps = raw[:, : k * t * 2].view(b, k, t, 2, h, w)
        logits = raw[:, k * t * 2: k * (t * 2 + 1)]
        past = None
        if s:  # step j (j = 0 the newest) is the displacement from frame now-j to now-j-1
            back = raw[:, k * (t * 2 + 1):].view(b, s, 2, h, w).cumsum(dim=1)
            past = back.flip(1)
        return steps.cumsum(dim=2), logits, past


class ReconstructionHead(nn.Module):
    """Stage-1 decoder: ``points`` 3-D points per BEV cell as offsets from the cell centre.

    Returns [B, P, 3, H, W] metric offsets (x, y from the cell centre; z from the grid's vertical centre).
    """

    def __init__(self, channels: int, hidden: int, points: int, geometry: BevGeometry, z_half_range: float) -> None:
        super().__init__()
        self.points = points
        self.body = nn.Sequential(conv_bn_relu(channels, hidden), conv_bn_relu(hidden, hidden))
        self.out = nn.Conv2d(hidden, points * 3, 1)
        self.register_buffer("scale", torch.tensor([geometry.cell_x, geometry.cell_y, z_half_range]),
                             persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        b, _, h, w = z.shape
        offsets = self.out(self.body(z)).view(b, self.points, 3, h, w)
        return offsets * self.scale.to(offsets.dtype)[None, None, :, None, None]
