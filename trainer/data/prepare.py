"""Worker-side preparation of one decoded sample: the SE(2) transforms, each agent-frame's map from
its LiDAR sensor frame into the agent's BEV frame (augmentation composed in), and target filtering /
class grouping. Points are not copied here: ``collate.collate_prepared`` maps each frame with its
affine and voxelises it straight away (``voxelize.FrameVoxelizer.map_and_voxelize``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.grid import GridConfig
from trainer.data import augment
from trainer.data.classes import DROPPED, ClassGrouping
from trainer.data.geometry import apply_affine, relative_se2, sensor_to_bev_affine
from trainer.data.sample import Sample


@dataclass
class PreparedSample:
    """One sample ready to collate. A' <= max_agents real agents, T frames, M' kept objects."""

    key: str
    clouds: list[np.ndarray]
    """[n_f, 4] float32 x, y, z, intensity in the LiDAR sensor frame (read-only views of the decoded
    sample), one per non-empty agent-frame of the kept agents, agent-major then time."""
    cloud_affines: np.ndarray
    """[F, 3, 4] float64 maps of ``clouds[f]``'s xyz into its agent's BEV frame (augmentation included)."""
    point_counts: torch.Tensor
    """[A', T] int64 points per agent-frame (0 where the frame is missing)."""
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

    def bev_points(self) -> np.ndarray:
        """[N', 4] float32 BEV points of all ``clouds`` (what the collate voxelises), concatenated."""
        return map_clouds(self.clouds, self.cloud_affines)


def map_clouds(clouds: list[np.ndarray], affines: np.ndarray) -> np.ndarray:
    """``clouds[f]`` ([n_f, C] sensor frame) mapped by ``affines[f]`` ([3, 4]), concatenated: [sum n_f, C]
    float32, computed in float64 as the voxeliser does."""
    out = np.empty((sum(len(c) for c in clouds), clouds[0].shape[1] if clouds else 4), dtype=np.float32)
    start = 0
    for cloud, affine in zip(clouds, affines):
        out[start:start + len(cloud)] = apply_affine(cloud, affine)
        start += len(cloud)
    return out


def bev_frames(sample: Sample, max_agents: int) -> tuple[list[int], list[np.ndarray], np.ndarray, np.ndarray,
                                                        np.ndarray, np.ndarray]:
    """Agents kept, their non-empty frames' sensor points (views) with sensor -> BEV affines [F, 3, 4],
    point counts [A', T], history_to_now [A', T, 3, 3] and agent_to_ego [A', 3, 3].

    Keeps the first ``max_agents`` agents that have a frame at t (the ego always has one). A frame's
    affine takes its LiDAR sensor frame into the agent's BEV frame at that time, with height
    measured from the ego LiDAR at t. Missing frames get no points and an identity transform.
    """
    t_n = sample.frame_valid.shape[1]
    t_now = t_n - 1
    kept = [a for a in range(sample.frame_valid.shape[0]) if sample.frame_valid[a, t_now]][:max_agents]
    poses, valid = sample.poses[kept], sample.frame_valid[kept]  # [A', T, 6], [A', T]
    ego_pose = sample.poses[0, t_now]
    agent_to_ego = relative_se2(poses[:, t_now], ego_pose)  # [A', 3, 3]
    history_to_now = np.where(valid[..., None, None], relative_se2(poses, poses[:, t_now:]), np.identity(3))
    counts = np.where(valid, sample.point_counts[kept], 0).astype(np.int64)
    frames = np.argwhere(counts > 0)  # [F, 2] (agent slot, time), agent-major
    affines = sensor_to_bev_affine(poses[frames[:, 0], frames[:, 1]], float(ego_pose[2]))  # [F, 3, 4]
    clouds = [sample.agent_points(kept[i], k) for i, k in frames]
    return kept, clouds, affines, counts, history_to_now, agent_to_ego


class SamplePreparer:
    """Turns decoded samples into ``PreparedSample`` (one instance per loader worker)."""

    def __init__(self, grid: GridConfig, grouping: ClassGrouping, *, max_agents: int,
                 augment_cfg=None, seed: int = 0) -> None:
        self.grid = grid
        self.grouping = grouping
        self.max_agents = max_agents
        self.augment_cfg = augment_cfg if augment_cfg is not None and augment_cfg.enabled else None
        self.rng = np.random.default_rng(seed)

    def __call__(self, sample: Sample) -> PreparedSample:
        kept, clouds, affines, counts, history_to_now, agent_to_ego = bev_frames(sample, self.max_agents)
        boxes, future, past = sample.boxes, sample.future, sample.past
        if self.augment_cfg is not None:
            g = augment.sample_augmentation(self.augment_cfg, self.rng)
            affines = augment.apply_to_affines(affines, g)
            history_to_now = augment.apply_to_transforms(history_to_now, g)
            agent_to_ego = augment.apply_to_transforms(agent_to_ego, g)
            boxes = augment.apply_to_boxes(boxes, g)
            future, past = augment.apply_to_xy(future, g), augment.apply_to_xy(past, g)
        classes = self.grouping.classes_of(sample.obj_types, sample.meta["obj_type_names"])
        (x0, x1), (y0, y1), _ = self.grid.ranges
        keep = (classes != DROPPED) & (boxes[:, 0] >= x0) & (boxes[:, 0] < x1) & (boxes[:, 1] >= y0) & (boxes[:, 1] < y1)
        agent_types = [1 if sample.meta["agent_types"][a] == "infrastructure" else 0 for a in kept]
        return PreparedSample(
            key=sample.key,
            clouds=clouds,
            cloud_affines=affines,
            point_counts=torch.from_numpy(counts),
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
