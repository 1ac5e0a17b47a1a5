"""Multi-agent spatial fusion: agents' BEV maps warped into the ego frame, attention across agents per cell."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from models.attention import AttentionBlock
from models.bev import BevGeometry
from models.warp import warp_bev


class AgentFusion(nn.Module):
    """The ego's feature at every cell attends over all agents' features there.

    Keys carry a type embedding (vehicle / infrastructure) and the ego an extra ego embedding; absent agents
    and cells outside an agent's warped view are masked. Non-ego agents are treated symmetrically, so their
    order does not matter, and padded slots contribute nothing.
    """

    def __init__(self, channels: int, num_agent_types: int, heads: int, ffn_ratio: int) -> None:
        super().__init__()
        self.type_embed = nn.Embedding(num_agent_types, channels)
        self.ego_embed = nn.Parameter(torch.zeros(channels))
        nn.init.normal_(self.type_embed.weight, std=0.02)
        self.block = AttentionBlock(channels, heads, ffn_ratio)

    def forward(self, features: Tensor, agent_mask: Tensor, agent_types: Tensor, agent_to_ego: Tensor,
                geometry: BevGeometry, *, sent: Tensor | None = None) -> Tensor:
        """features: [B, A, C, H, W] per agent in its own frame now; agent_mask / agent_types: [B, A];
        agent_to_ego: [B, A, 3, 3]; sent: [B, A, H, W] bool in each agent's own frame, the cells a collaborator
        sent (None: all; an ego-frame cell counts as sent where the warped mask is >= 0.5) -> [B, C, H, W]
        fused ego-frame features."""
        b, a, c, h, w = features.shape
        if a > 1:
            maps = features[:, 1:]
            if sent is not None:
                maps = torch.cat([maps, sent[:, 1:, None].to(maps.dtype)], dim=2)
            others, in_view = warp_bev(maps.flatten(0, 1), agent_to_ego[:, 1:].flatten(0, 1), geometry)
            others = others.view(b, a - 1, -1, h, w)
            if sent is not None:
                in_view = in_view & (others[:, :, c].flatten(0, 1) >= 0.5)
            features = torch.cat([features[:, :1], others[:, :, :c]], dim=1)
            in_view = torch.cat([in_view.new_ones(b, 1, h, w), in_view.view(b, a - 1, h, w)], dim=1)
        else:
            in_view = agent_mask.new_ones(b, 1, h, w)
        valid = in_view & agent_mask[..., None, None]
        embed = self.type_embed(agent_types.clamp(0, self.type_embed.num_embeddings - 1))  # [B, A, C]
        embed = torch.cat([embed[:, :1] + self.ego_embed, embed[:, 1:]], dim=1).to(features.dtype)
        tokens = rearrange(features + embed[..., None, None], "b a c h w -> (b h w) a c")
        key_valid = rearrange(valid, "b a h w -> (b h w) a")
        fused = self.block(tokens[:, :1], tokens, key_valid)
        return rearrange(fused, "(b h w) 1 c -> b c h w", b=b, h=h, w=w)
