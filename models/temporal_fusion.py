"""Temporal fusion per agent: ego-motion-compensated history BEV maps, attention over time at every cell."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from models.attention import AttentionBlock
from models.bev import BevGeometry
from models.warp import warp_bev


class TemporalFusion(nn.Module):
    """Warp each history frame into the agent's frame now, then let the current frame attend over time.

    Keys are masked where the frame is missing (``frame_mask``) or the cell was outside the frame's view.
    Learned time embeddings tell the attention how old each frame is.
    """

    def __init__(self, channels: int, history: int, heads: int, ffn_ratio: int) -> None:
        super().__init__()
        self.history = history
        self.time_embed = nn.Parameter(torch.zeros(history, channels))
        nn.init.normal_(self.time_embed, std=0.02)
        self.block = AttentionBlock(channels, heads, ffn_ratio)

    def forward(self, bev: Tensor, frame_mask: Tensor, history_to_now: Tensor, geometry: BevGeometry) -> Tensor:
        """bev: [B, A, T, C, H, W] per-frame maps in each frame's own BEV frame; frame_mask: [B, A, T];
        history_to_now: [B, A, T, 3, 3] -> [B, A, C, H, W] fused current-time features."""
        b, a, t, c, h, w = bev.shape
        if t != self.history:
            raise ValueError(f"expected {self.history} history frames, got {t}")
        past = bev[:, :, :-1].flatten(0, 2)
        warped, in_view = warp_bev(past, history_to_now[:, :, :-1].flatten(0, 2), geometry)
        frames = torch.cat([warped.view(b, a, t - 1, c, h, w), bev[:, :, -1:]], dim=2)
        in_view = torch.cat([in_view.view(b, a, t - 1, h, w), in_view.new_ones(b, a, 1, h, w)], dim=2)
        valid = in_view & frame_mask[..., None, None]
        tokens = rearrange(frames, "b a t c h w -> (b a h w) t c") + self.time_embed.to(frames.dtype)
        key_valid = rearrange(valid, "b a t h w -> (b a h w) t")
        fused = self.block(tokens[:, -1:], tokens, key_valid)
        return rearrange(fused, "(b a h w) 1 c -> b a c h w", b=b, a=a, h=h, w=w)
