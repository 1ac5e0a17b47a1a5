"""The collated batch: the one contract between the data pipeline and the model.

Shapes use B scenes, A agent slots (``max_agents``; slot 0 is the ego), T history frames
(index T-1 is the current time t, index 0 the oldest), M padded ground-truth objects,
T_f future steps and V voxels. Sparse input is flat over agent-frames: the spconv batch index of
(scene b, agent a, frame t) is ``n = (b * A + a) * T + t``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class Batch:
    """One collated training / evaluation batch (all tensors on one device)."""

    voxels: Tensor
    """[V, P, 4] float32 points per voxel (x, y, z, intensity) in the agent's BEV frame, zero-padded."""
    voxel_num_points: Tensor
    """[V] int32 number of valid points in each voxel."""
    voxel_coords: Tensor
    """[V, 4] int32 (n, z, y, x) voxel indices; n is the flat agent-frame index above."""
    agent_mask: Tensor
    """[B, A] bool, True for a real agent; padded slots are False. agent_mask[:, 0] is all True."""
    agent_types: Tensor
    """[B, A] int64, 0 = connected vehicle, 1 = infrastructure (padded slots 0)."""
    frame_mask: Tensor
    """[B, A, T] bool, True where that agent has a LiDAR frame at that history step."""
    history_to_now: Tensor
    """[B, A, T, 3, 3] float32 2-D homogeneous transform: agent a's BEV frame at history step t -> its
    BEV frame now. Rigid (SE(2)) from the data; augmentation may add a global flip / scale, so
    consumers treat it as a general 2-D affine map."""
    agent_to_ego: Tensor
    """[B, A, 3, 3] float32 2-D homogeneous transform: agent a's BEV frame now -> the ego BEV frame now."""
    gt_boxes: Tensor
    """[B, M, 7] float32 (x, y, z, l, w, h, yaw) in the ego BEV frame now; l/w/h are full sizes."""
    gt_classes: Tensor
    """[B, M] int64 training class index, -1 for padding."""
    gt_mask: Tensor
    """[B, M] bool, True for real objects."""
    gt_track_ids: Tensor
    """[B, M] int64 object ids from the source annotations (-1 for padding)."""
    gt_future: Tensor
    """[B, M, T_f, 2] float32 future (x, y) in the ego BEV frame now."""
    gt_future_valid: Tensor
    """[B, M, T_f] bool."""
    gt_past: Tensor
    """[B, M, T, 2] float32 past (x, y) at the history steps (index T-1 = now), ego BEV frame now."""
    gt_past_valid: Tensor
    """[B, M, T] bool."""
    keys: list[str]
    """[B] sample keys, ``{scenario}__{ego_id}__{timestamp}``."""
    num_skipped: int = 0
    """Corrupt samples the producing loader worker skipped since its previous batch (for logging)."""

    @property
    def num_scenes(self) -> int:
        return self.agent_mask.shape[0]

    @property
    def max_agents(self) -> int:
        return self.agent_mask.shape[1]

    @property
    def history(self) -> int:
        return self.frame_mask.shape[2]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor moved to ``device``."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=non_blocking) if isinstance(value, Tensor) else value
        return Batch(**moved)
