"""Hand-built Batch / SceneDetections objects shared by the eval and viz tests (tiny sizes)."""

from __future__ import annotations

import math

import numpy as np
import torch

from models.batch import Batch
from models.detections import SceneDetections
from models.grid import GridConfig


def box(x: float, y: float, l: float = 4.0, w: float = 2.0, yaw: float = 0.0) -> list[float]:
    """(x, y, z, l, w, h, yaw) with z = 0, h = 1.5."""
    return [x, y, 0.0, l, w, 1.5, yaw]


def se2(x: float, y: float, yaw: float) -> torch.Tensor:
    """[3, 3] homogeneous 2-D rigid transform."""
    c, s = math.cos(yaw), math.sin(yaw)
    return torch.tensor([[c, -s, x], [s, c, y], [0.0, 0.0, 1.0]])


def make_batch(
    scenes: list[dict],
    *,
    num_agents: int = 2,
    history: int = 2,
    horizon: int = 3,
    grid: GridConfig | None = None,
) -> Batch:
    """A Batch from per-scene dicts.

    Scene keys: ``key``; ``boxes`` [M, 7]; ``classes`` [M]; optional ``future`` [M, T_f, 2] (default:
    boxes stay put), ``future_valid`` [M, T_f]; ``agents`` list of (x, y, yaw, type) agent poses in the
    ego frame (default: the ego alone); ``points`` {(agent, frame): [P, 4] in that agent's BEV frame}.
    Every point becomes its own voxel.
    """
    grid = grid or GridConfig()
    num_scenes = len(scenes)
    max_gt = max(1, max(len(s["boxes"]) for s in scenes))
    gt_boxes = torch.zeros(num_scenes, max_gt, 7)
    gt_classes = torch.full((num_scenes, max_gt), -1, dtype=torch.long)
    gt_mask = torch.zeros(num_scenes, max_gt, dtype=torch.bool)
    gt_future = torch.zeros(num_scenes, max_gt, horizon, 2)
    gt_future_valid = torch.zeros(num_scenes, max_gt, horizon, dtype=torch.bool)
    agent_mask = torch.zeros(num_scenes, num_agents, dtype=torch.bool)
    agent_types = torch.zeros(num_scenes, num_agents, dtype=torch.long)
    agent_to_ego = torch.eye(3).repeat(num_scenes, num_agents, 1, 1)
    voxels, coords = [], []
    for b, scene in enumerate(scenes):
        m = len(scene["boxes"])
        if m:
            boxes = torch.tensor(np.asarray(scene["boxes"], dtype=np.float32))
            gt_boxes[b, :m] = boxes
            gt_classes[b, :m] = torch.as_tensor(scene["classes"], dtype=torch.long)
            gt_mask[b, :m] = True
            future = scene.get("future")
            gt_future[b, :m] = boxes[:, None, :2].expand(m, horizon, 2) if future is None else torch.as_tensor(
                np.asarray(future, dtype=np.float32))
            valid = scene.get("future_valid")
            gt_future_valid[b, :m] = True if valid is None else torch.as_tensor(np.asarray(valid, dtype=bool))
        for a, (x, y, yaw, kind) in enumerate(scene.get("agents", [(0.0, 0.0, 0.0, 0)])):
            agent_mask[b, a] = True
            agent_types[b, a] = kind
            agent_to_ego[b, a] = se2(x, y, yaw)
        for (a, t), pts in scene.get("points", {}).items():
            pts = torch.as_tensor(np.asarray(pts, dtype=np.float32)).reshape(-1, 4)
            n = (b * num_agents + a) * history + t
            x0, y0, z0 = grid.x_range[0], grid.y_range[0], grid.z_range[0]
            vx, vy, vz = grid.voxel_size
            idx = torch.stack([((pts[:, 2] - z0) / vz).floor(), ((pts[:, 1] - y0) / vy).floor(),
                               ((pts[:, 0] - x0) / vx).floor()], dim=1).int()
            coords.append(torch.cat([torch.full((len(pts), 1), n, dtype=torch.int32), idx], dim=1))
            padded = torch.zeros(len(pts), grid.max_points_per_voxel, 4)
            padded[:, 0] = pts
            voxels.append(padded)
    num_voxels = sum(len(v) for v in voxels)
    return Batch(
        voxels=torch.cat(voxels) if voxels else torch.zeros(0, grid.max_points_per_voxel, 4),
        voxel_num_points=torch.ones(num_voxels, dtype=torch.int32),
        voxel_coords=torch.cat(coords) if coords else torch.zeros(0, 4, dtype=torch.int32),
        agent_mask=agent_mask,
        agent_types=agent_types,
        frame_mask=agent_mask[:, :, None].expand(num_scenes, num_agents, history).clone(),
        history_to_now=torch.eye(3).repeat(num_scenes, num_agents, history, 1, 1),
        agent_to_ego=agent_to_ego,
        gt_boxes=gt_boxes,
        gt_classes=gt_classes,
        gt_mask=gt_mask,
        gt_track_ids=torch.where(gt_mask, torch.arange(max_gt).expand(num_scenes, max_gt), -1),
        gt_future=gt_future,
        gt_future_valid=gt_future_valid,
        gt_past=torch.zeros(num_scenes, max_gt, history, 2),
        gt_past_valid=torch.zeros(num_scenes, max_gt, history, dtype=torch.bool),
        keys=[s["key"] for s in scenes],
    )


def make_detections(boxes, scores, labels, trajectories=None, *, modes: int = 2, horizon: int = 3) -> SceneDetections:
    """SceneDetections; default trajectories: every mode stays at the box centre (uniform mode scores)."""
    boxes_t = torch.tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 7)
    n = boxes_t.shape[0]
    if trajectories is None:
        traj = boxes_t[:, None, None, :2].expand(n, modes, horizon, 2).clone()
    else:
        traj = torch.tensor(np.asarray(trajectories, dtype=np.float32)).reshape(n, -1, horizon, 2)
    k = traj.shape[1]
    return SceneDetections(
        boxes=boxes_t,
        scores=torch.tensor(np.asarray(scores, dtype=np.float32)).reshape(n),
        labels=torch.tensor(np.asarray(labels, dtype=np.int64)).reshape(n),
        trajectories=traj,
        mode_scores=torch.full((n, k), 1.0 / max(k, 1)),
    )


def test_make_batch_is_consistent():
    batch = make_batch([
        {"key": "s0", "boxes": [box(1, 2)], "classes": [0], "points": {(1, 1): [[1.0, 2.0, 0.0, 0.5]]},
         "agents": [(0, 0, 0, 0), (5, 0, 0, 1)]},
        {"key": "s1", "boxes": [], "classes": []},
    ])
    assert batch.gt_boxes.shape == (2, 1, 7) and batch.gt_mask.tolist() == [[True], [False]]
    assert batch.gt_classes.tolist() == [[0], [-1]]
    assert batch.voxel_coords.tolist() == [[3, 12, 105, 178]]  # n = (0*2+1)*2+1; z, y, x cells
    assert batch.agent_types.tolist() == [[0, 1], [0, 0]]
    assert batch.agent_mask.tolist() == [[True, True], [True, False]]
