"""Windowed spatial self-attention over a BEV map (non-overlapping windows, optionally shifted)."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from models.attention import AttentionBlock


class WindowAttention(nn.Module):
    """Self-attention inside square windows of ``window`` cells; ``shift`` offsets the window grid.

    The map is zero-padded (``shift`` cells on top/left, up to a multiple of the window on bottom/right);
    padded cells are masked as keys and cropped from the output, so no wrap-around is introduced.
    A depthwise 3x3 conv adds position information before the attention.
    """

    def __init__(self, channels: int, heads: int, window: int, shift: int, ffn_ratio: int) -> None:
        super().__init__()
        if not 0 <= shift < window:
            raise ValueError(f"shift must be in [0, window={window}), got {shift}")
        self.window, self.shift = window, shift
        self.pos = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.block = AttentionBlock(channels, heads, ffn_ratio)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        b, c, h, w = x.shape
        x = x + self.pos(x)
        s, win = self.shift, self.window
        pad_h = (-(h + s)) % win
        pad_w = (-(w + s)) % win
        padded = F.pad(x, (s, pad_w, s, pad_h))
        valid = F.pad(x.new_ones(b, 1, h, w, dtype=x.dtype), (s, pad_w, s, pad_h)) > 0
        tokens = rearrange(padded, "b c (nh wh) (nw ww) -> (b nh nw) (wh ww) c", wh=win, ww=win)
        key_valid = rearrange(valid, "b 1 (nh wh) (nw ww) -> (b nh nw) (wh ww)", wh=win, ww=win)
        out = self.block(tokens, tokens, key_valid)
        hh, ww_ = h + s + pad_h, w + s + pad_w
        out = rearrange(out, "(b nh nw) (wh ww) c -> b c (nh wh) (nw ww)", b=b, nh=hh // win, nw=ww_ // win, wh=win)
        return out[:, :, s:s + h, s:s + w]
