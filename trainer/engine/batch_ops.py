"""Pure views of a ``Batch`` used by recipe stages: ego-only, and current-frame-only inputs."""

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
