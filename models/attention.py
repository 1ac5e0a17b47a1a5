"""Masked pre-norm attention blocks over small token sets (time steps, agents, window cells)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class AttentionBlock(nn.Module):
    """Pre-norm multi-head attention + feed-forward, with a key-validity mask.

    Used per BEV cell (queries attend over that cell's time steps or agents) and per window.
    Query rows whose keys are all invalid get no attention update (their residual passes through).
    """

    def __init__(self, dim: int, heads: int, ffn_ratio: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_ratio * dim), nn.GELU(), nn.Linear(ffn_ratio * dim, dim))

    def forward(self, query: Tensor, context: Tensor, key_valid: Tensor) -> Tensor:
        """query: [L, Q, C]; context: [L, S, C]; key_valid: [L, S] bool -> [L, Q, C]."""
        if key_valid.shape != context.shape[:2]:
            raise ValueError(f"key_valid {tuple(key_valid.shape)} must match context {tuple(context.shape[:2])}")
        any_valid = key_valid.any(dim=1)  # [L]
        safe_mask = key_valid | ~any_valid[:, None]
        q = rearrange(self.to_q(self.norm_q(query)), "l q (h d) -> l h q d", h=self.heads)
        k, v = rearrange(self.to_kv(self.norm_kv(context)), "l s (two h d) -> two l h s d", two=2, h=self.heads)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask[:, None, None, :])
        update = self.proj(rearrange(attended, "l h q d -> l q (h d)"))
        x = query + update * any_valid[:, None, None].to(update.dtype)
        return x + self.ffn(self.norm_ffn(x))
