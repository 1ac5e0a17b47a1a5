"""Collate prepared samples into ``models.batch.Batch``: agents padded to ``max_agents`` (mask),
objects padded to the batch maximum M (mask), every agent-frame voxelised into one tensor with
flat agent-frame indices ``n = (b * A + a) * T + t``.
"""

from __future__ import annotations

import numpy as np
import torch

from models.batch import Batch
from trainer.data.prepare import PreparedSample
from trainer.data.voxelize import FrameVoxelizer


def _pad(t: torch.Tensor, size: int, fill: float | int | bool) -> torch.Tensor:
    """Pad dim 0 of ``t`` to ``size`` with ``fill``."""
    out = torch.full((size, *t.shape[1:]), fill, dtype=t.dtype)
    out[: t.shape[0]] = t
    return out


def collate_prepared(samples: list[PreparedSample], *, max_agents: int, voxelizer: FrameVoxelizer,
                     num_skipped: int = 0) -> Batch:
    """Stack ``samples`` (same T and T_f) into a ``Batch`` with A = ``max_agents`` slots."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    t_n = samples[0].frame_mask.shape[1]
    t_f = samples[0].future.shape[1]
    for s in samples:
        if s.frame_mask.shape[1] != t_n or s.future.shape[1] != t_f:
            raise ValueError(
                f"sample {s.key} has T={s.frame_mask.shape[1]}, T_f={s.future.shape[1]}; batch has T={t_n}, T_f={t_f}"
            )
        if s.frame_mask.shape[0] > max_agents:
            raise ValueError(f"sample {s.key} has {s.frame_mask.shape[0]} agents > max_agents={max_agents}")
    m = max(s.boxes.shape[0] for s in samples)
    eye = torch.eye(3)
    frame_ids = [b * max_agents * t_n + i  # a * T + t -> n
                 for b, s in enumerate(samples) for i in s.point_counts.reshape(-1).nonzero().flatten().tolist()]
    voxels, voxel_coords, voxel_num_points = voxelizer.map_and_voxelize(
        [c for s in samples for c in s.clouds], np.concatenate([s.cloud_affines for s in samples]), frame_ids)
    n_agents = [s.frame_mask.shape[0] for s in samples]
    return Batch(
        voxels=voxels,
        voxel_num_points=voxel_num_points,
        voxel_coords=voxel_coords,
        agent_mask=torch.stack([torch.arange(max_agents) < n for n in n_agents]),
        agent_types=torch.stack([_pad(s.agent_types, max_agents, 0) for s in samples]),
        frame_mask=torch.stack([_pad(s.frame_mask, max_agents, False) for s in samples]),
        history_to_now=torch.stack([
            torch.cat([s.history_to_now, eye.expand(max_agents - n, t_n, 3, 3)]) for s, n in zip(samples, n_agents)
        ]),
        agent_to_ego=torch.stack([
            torch.cat([s.agent_to_ego, eye.expand(max_agents - n, 3, 3)]) for s, n in zip(samples, n_agents)
        ]),
        gt_boxes=torch.stack([_pad(s.boxes, m, 0.0) for s in samples]),
        gt_classes=torch.stack([_pad(s.classes, m, -1) for s in samples]),
        gt_mask=torch.stack([torch.arange(m) < s.boxes.shape[0] for s in samples]),
        gt_track_ids=torch.stack([_pad(s.track_ids, m, -1) for s in samples]),
        gt_future=torch.stack([_pad(s.future, m, 0.0) for s in samples]),
        gt_future_valid=torch.stack([_pad(s.future_valid, m, False) for s in samples]),
        gt_past=torch.stack([_pad(s.past, m, 0.0) for s in samples]),
        gt_past_valid=torch.stack([_pad(s.past_valid, m, False) for s in samples]),
        keys=[s.key for s in samples],
        num_skipped=num_skipped,
    )
