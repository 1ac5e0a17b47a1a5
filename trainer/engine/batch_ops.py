"""Pure views of a ``Batch``: ego-only and current-frame-only inputs (recipe stages), and one agent alone
(the fusion baselines of ``trainer.eval.cooperative``)."""

from __future__ import annotations

from dataclasses import replace

import torch

from models.batch import Batch


def _keep_voxels(batch: Batch, keep: torch.Tensor) -> Batch:
    return replace(batch, voxels=batch.voxels[keep], voxel_num_points=batch.voxel_num_points[keep],
                   voxel_coords=batch.voxel_coords[keep])


def ego_only(batch: Batch) -> Batch:
    """The batch as the ego alone would see it: collaborators become absent agents."""
    a, t = batch.max_agents, batch.history
    agent = (batch.voxel_coords[:, 0].long() // t) % a
    out = _keep_voxels(batch, agent == 0)
    agent_mask = torch.zeros_like(batch.agent_mask)
    agent_mask[:, 0] = True
    frame_mask = batch.frame_mask & agent_mask[:, :, None]
    return replace(out, agent_mask=agent_mask, frame_mask=frame_mask)


def current_frame_only(batch: Batch) -> Batch:
    """The batch without history: only frame T-1 (now) keeps its points and its frame flag."""
    t = batch.history
    out = _keep_voxels(batch, batch.voxel_coords[:, 0].long() % t == t - 1)
    frame_mask = torch.zeros_like(batch.frame_mask)
    frame_mask[:, :, -1] = batch.frame_mask[:, :, -1]
    return replace(out, frame_mask=frame_mask)


def agent_view(batch: Batch, agent: int) -> Batch:
    """The batch as agent slot ``agent`` alone sees it, as the ego of a one-agent batch ([B, 1] slots): its
    voxels (renumbered to slot 0), frames, types and history transforms, ``agent_to_ego`` the identity (its own
    frame). Ground truth stays in the real ego's frame. Scenes where the agent is absent keep an absent slot 0."""
    a, t = batch.max_agents, batch.history
    n = batch.voxel_coords[:, 0].long()
    out = _keep_voxels(batch, (n // t) % a == agent)
    coords = out.voxel_coords.clone()
    coords[:, 0] = (coords[:, 0].long() // (a * t) * t + coords[:, 0].long() % t).to(coords.dtype)
    one = slice(agent, agent + 1)
    eye = torch.eye(3, dtype=batch.agent_to_ego.dtype, device=batch.agent_to_ego.device)
    return replace(out, voxel_coords=coords, agent_mask=batch.agent_mask[:, one],
                   agent_types=batch.agent_types[:, one], frame_mask=batch.frame_mask[:, one],
                   history_to_now=batch.history_to_now[:, one],
                   agent_to_ego=eye.expand(batch.num_scenes, 1, 3, 3).clone())
