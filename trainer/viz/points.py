"""Recover one scene's LiDAR points from a collated Batch's voxels, in the ego BEV frame now."""

from __future__ import annotations

import numpy as np
import torch

from models.batch import Batch


def scene_points_in_ego(batch: Batch, scene: int, *, all_frames: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Points of every real agent of ``scene``, mapped into the ego BEV frame now.

    A voxel of agent-frame n = (b * A + a) * T + t holds points in agent a's BEV frame at history step
    t; they reach the ego frame through ``agent_to_ego[b, a] @ history_to_now[b, a, t]``.

    all_frames: False keeps only the current frame (t = T - 1), True every history frame.
    Returns (points [P, 4] float32 (x, y, z, intensity) in the ego frame, agent [P] int64 slot index).
    """
    if not 0 <= scene < batch.num_scenes:
        raise ValueError(f"scene must be in [0, {batch.num_scenes}), got {scene}")
    num_agents, history = batch.max_agents, batch.history
    n = batch.voxel_coords[:, 0].detach().cpu().long()
    b, a, t = n // (num_agents * history), (n // history) % num_agents, n % history
    agent_mask = batch.agent_mask.detach().cpu()
    frame_mask = batch.frame_mask.detach().cpu()
    keep = (b == scene) & agent_mask[scene, a] & frame_mask[scene, a, t]
    if not all_frames:
        keep &= t == history - 1
    voxels = batch.voxels.detach().cpu().float()[keep]  # [V', P, 4]
    counts = batch.voxel_num_points.detach().cpu().long()[keep]
    a, t = a[keep], t[keep]
    # [V', 3, 3] agent-frame -> ego-now transform of each kept voxel.
    to_ego = batch.agent_to_ego.detach().cpu().float()[scene, a] @ batch.history_to_now.detach().cpu().float()[scene, a, t]
    point_valid = torch.arange(voxels.shape[1])[None, :] < counts[:, None]  # [V', P]
    xy = torch.einsum("vij,vpj->vpi", to_ego[:, :2, :2], voxels[..., :2]) + to_ego[:, None, :2, 2]
    points = torch.cat([xy, voxels[..., 2:]], dim=-1)[point_valid]
    agent = a[:, None].expand_as(point_valid)[point_valid]
    return points.numpy().astype(np.float32), agent.numpy().astype(np.int64)
