"""Worker-side preparation of one decoded sample: points into each agent's BEV frame, SE(2)
transforms, optional augmentation, target filtering / class grouping, and voxelisation with
spconv's CPU ``PointToVoxel``. The output is what ``collate.collate_prepared`` stacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from spconv.pytorch.utils import PointToVoxel

from models.grid import GridConfig
from trainer.data import augment
from trainer.data.classes import DROPPED, ClassGrouping
from trainer.data.geometry import relative_se2, sensor_to_bev
from trainer.data.sample import Sample


@dataclass
class PreparedSample:
    """One sample ready to collate. A' <= max_agents real agents, T frames, M' kept objects."""

    key: str
    voxels: torch.Tensor
    """[V, P, 4] float32."""
    voxel_num_points: torch.Tensor
    """[V] int32."""
    voxel_coords: torch.Tensor
    """[V, 4] int32 (a * T + t, z, y, x): local agent-frame index, then spconv's zyx."""
    agent_types: torch.Tensor
    """[A'] int64 (0 vehicle, 1 infrastructure)."""
    frame_mask: torch.Tensor
    """[A', T] bool."""
    history_to_now: torch.Tensor
    """[A', T, 3, 3] float32."""
    agent_to_ego: torch.Tensor
    """[A', 3, 3] float32."""
    boxes: torch.Tensor
    """[M', 7] float32."""
    classes: torch.Tensor
    """[M'] int64."""
    track_ids: torch.Tensor
    """[M'] int64."""
    future: torch.Tensor
    """[M', T_f, 2] float32."""
    future_valid: torch.Tensor
    """[M', T_f] bool."""
    past: torch.Tensor
    """[M', T, 2] float32."""
    past_valid: torch.Tensor
    """[M', T] bool."""


def bev_frames(sample: Sample, max_agents: int) -> tuple[list[int], list[list[np.ndarray | None]], np.ndarray, np.ndarray]:
    """Agents kept, their per-frame BEV points, history_to_now [A', T, 3, 3], agent_to_ego [A', 3, 3].

    Keeps the first ``max_agents`` agents that have a frame at t (the ego always has one). Points
    go from each frame's LiDAR sensor frame into the agent's BEV frame at that time, with height
    measured from the ego LiDAR at t. Missing frames get None points and an identity transform.
    """
    t_now = sample.frame_valid.shape[1] - 1
    kept = [a for a in range(sample.frame_valid.shape[0]) if sample.frame_valid[a, t_now]][:max_agents]
    ego_pose = sample.poses[0, t_now]
    z_ref = float(ego_pose[2])
    history_to_now = np.tile(np.identity(3), (len(kept), sample.frame_valid.shape[1], 1, 1))
    agent_to_ego = np.zeros((len(kept), 3, 3))
    points: list[list[np.ndarray | None]] = []
    for i, a in enumerate(kept):
        now_pose = sample.poses[a, t_now]
        agent_to_ego[i] = relative_se2(now_pose, ego_pose)
        row: list[np.ndarray | None] = []
        for k in range(sample.frame_valid.shape[1]):
            if not sample.frame_valid[a, k]:
                row.append(None)
                continue
            history_to_now[i, k] = relative_se2(sample.poses[a, k], now_pose)
            row.append(sensor_to_bev(sample.agent_points(a, k), sample.poses[a, k], z_ref).astype(np.float32))
        points.append(row)
    return kept, points, history_to_now, agent_to_ego


class SamplePreparer:
    """Turns decoded samples into ``PreparedSample`` (one instance per loader worker)."""

    def __init__(self, grid: GridConfig, grouping: ClassGrouping, *, max_agents: int,
                 augment_cfg=None, seed: int = 0) -> None:
        self.grid = grid
        self.grouping = grouping
        self.max_agents = max_agents
        self.augment_cfg = augment_cfg if augment_cfg is not None and augment_cfg.enabled else None
        self.rng = np.random.default_rng(seed)
        self._voxelizer: PointToVoxel | None = None

    @property
    def voxelizer(self) -> PointToVoxel:
        if self._voxelizer is None:  # built lazily: inside the worker process, never pickled
            self._voxelizer = PointToVoxel(
                vsize_xyz=list(self.grid.voxel_size), coors_range_xyz=self.grid.coors_range_xyz,
                num_point_features=4, max_num_voxels=self.grid.max_voxels,
                max_num_points_per_voxel=self.grid.max_points_per_voxel, device=torch.device("cpu"),
            )
        return self._voxelizer

    def voxelise(self, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[N, 4] BEV points -> voxels [V, P, 4], coords [V, 3] (z, y, x) int32, num_points [V] int32."""
        voxels, coords, num = self.voxelizer(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)))
        return voxels.clone(), coords.to(torch.int32).clone(), num.to(torch.int32).clone()

    def __call__(self, sample: Sample) -> PreparedSample:
        kept, frames, history_to_now, agent_to_ego = bev_frames(sample, self.max_agents)
        boxes, future, past = sample.boxes, sample.future, sample.past
        if self.augment_cfg is not None:
            g = augment.sample_augmentation(self.augment_cfg, self.rng)
            frames = [[None if p is None else augment.apply_to_points(p, g) for p in row] for row in frames]
            history_to_now = augment.apply_to_transforms(history_to_now, g)
            agent_to_ego = augment.apply_to_transforms(agent_to_ego, g)
            boxes = augment.apply_to_boxes(boxes, g)
            future, past = augment.apply_to_xy(future, g), augment.apply_to_xy(past, g)
        classes = self.grouping.classes_of(sample.obj_types, sample.meta["obj_type_names"])
        (x0, x1), (y0, y1), _ = self.grid.ranges
        keep = (classes != DROPPED) & (boxes[:, 0] >= x0) & (boxes[:, 0] < x1) & (boxes[:, 1] >= y0) & (boxes[:, 1] < y1)
        t_n = sample.frame_valid.shape[1]
        voxels, coords, nums = [], [], []
        for i, row in enumerate(frames):
            for k, pts in enumerate(row):
                if pts is None or len(pts) == 0:
                    continue
                v, c, n = self.voxelise(pts)
                index = torch.full((len(c), 1), i * t_n + k, dtype=torch.int32)
                voxels.append(v)
                coords.append(torch.cat([index, c], dim=1))
                nums.append(n)
        p = self.grid.max_points_per_voxel
        agent_types = [1 if sample.meta["agent_types"][a] == "infrastructure" else 0 for a in kept]
        return PreparedSample(
            key=sample.key,
            voxels=torch.cat(voxels) if voxels else torch.zeros((0, p, 4)),
            voxel_num_points=torch.cat(nums) if nums else torch.zeros(0, dtype=torch.int32),
            voxel_coords=torch.cat(coords) if coords else torch.zeros((0, 4), dtype=torch.int32),
            agent_types=torch.tensor(agent_types, dtype=torch.int64),
            frame_mask=torch.from_numpy(sample.frame_valid[kept].copy()),
            history_to_now=torch.from_numpy(history_to_now).float(),
            agent_to_ego=torch.from_numpy(agent_to_ego).float(),
            boxes=torch.from_numpy(np.ascontiguousarray(boxes[keep], dtype=np.float32)),
            classes=torch.from_numpy(classes[keep].astype(np.int64)),
            track_ids=torch.from_numpy(sample.track_ids[keep].copy()),
            future=torch.from_numpy(np.ascontiguousarray(future[keep], dtype=np.float32)),
            future_valid=torch.from_numpy(sample.future_valid[keep].copy()),
            past=torch.from_numpy(np.ascontiguousarray(past[keep], dtype=np.float32)),
            past_valid=torch.from_numpy(sample.past_valid[keep].copy()),
        )
