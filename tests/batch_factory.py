"""Builds plausible collated ``Batch`` objects directly (no data pipeline) for fast, realistic model tests.

Each scene has agents moving (or, for infrastructure, standing) in a world frame and objects following
curved paths (constant speed and yaw rate). Every agent-frame's LiDAR is emulated by points sampled on the
surfaces of the objects in sensor range plus ground points, expressed in that agent's BEV frame at that
frame, and voxelised with spconv's ``PointToVoxel``. Transforms and targets are computed consistently from
the same world poses, so warping by ``history_to_now`` / ``agent_to_ego`` aligns the agents' views.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from spconv.pytorch.utils import PointToVoxel

from models.batch import Batch
from models.config import ModelConfig

CLASS_SIZES = {0: (4.5, 1.9, 1.6), 1: (0.8, 0.8, 1.7), 2: (8.0, 2.6, 3.0)}
"""Full (l, w, h) per training class: car, pedestrian, truck."""
GROUND_Z = -1.8
"""Ground height relative to the ego LiDAR."""
STEP_S = 0.5
"""Seconds between history / future steps (2 Hz)."""


def se2(x: float, y: float, yaw: float) -> np.ndarray:
    """[3, 3] homogeneous 2-D pose (frame -> world)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, x], [s, c, y], [0.0, 0.0, 1.0]])


def _apply(transform: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ transform[:2, :2].T + transform[:2, 2]


def _box_surface_points(centre: np.ndarray, yaw: float, size: tuple[float, float, float], count: int,
                        rng: np.random.Generator) -> np.ndarray:
    """[count, 3] points on the four sides and the top of an oriented box (world frame)."""
    length, width, height = size
    u = rng.uniform(-0.5, 0.5, size=(count, 3))
    face = rng.integers(0, 5, size=count)
    u[face == 0, 0], u[face == 1, 0] = 0.5, -0.5
    u[face == 2, 1], u[face == 3, 1] = 0.5, -0.5
    u[face == 4, 2] = 0.5
    local = u * np.array([length, width, height])
    xy = _apply(se2(centre[0], centre[1], yaw), local[:, :2])
    return np.concatenate([xy, local[:, 2:3] + centre[2]], axis=1)


def _moving(start: np.ndarray, heading: float, speed: float, yaw_rate: float, steps: np.ndarray) -> np.ndarray:
    """[S, 3] (x, y, yaw) along a constant-speed, constant-yaw-rate path at time offsets ``steps`` (s)."""
    yaw = heading + yaw_rate * steps
    if abs(yaw_rate) < 1e-6:
        x = start[0] + speed * steps * math.cos(heading)
        y = start[1] + speed * steps * math.sin(heading)
    else:
        x = start[0] + speed / yaw_rate * (np.sin(yaw) - math.sin(heading))
        y = start[1] - speed / yaw_rate * (np.cos(yaw) - math.cos(heading))
    return np.stack([x, y, yaw], axis=1)


def make_batch(config: ModelConfig, *, num_scenes: int = 2, agents: int | list[int] = 4, max_agents: int = 4,
               num_objects: int = 6, hidden_from_ego: int = 0, infrastructure: bool = True,
               drop_old_frames: bool = False, seed: int = 0, points_per_object: int = 160,
               ground_points: int = 500, min_gap: float = 0.0) -> Batch:
    """A Batch of ``num_scenes`` synthetic scenes matching ``config`` (grid, history, future steps).

    agents: real agents per scene (int or one per scene), at most ``max_agents``; the rest are padding.
    hidden_from_ego: the first this-many objects produce no points in the ego's LiDAR (an occluded object
    only collaborators see). infrastructure: the last real agent (if > 1) is a static infrastructure unit.
    drop_old_frames: agents other than the ego miss their oldest history frame. min_gap: objects' centres
    at t are redrawn until they lie at least this far (metres) from the earlier objects' (0: overlaps allowed).
    """
    agent_counts = [agents] * num_scenes if isinstance(agents, int) else list(agents)
    if len(agent_counts) != num_scenes or not all(1 <= n <= max_agents for n in agent_counts):
        raise ValueError(f"agents must give 1..{max_agents} agents for each of {num_scenes} scenes")
    rng = np.random.default_rng(seed)
    grid, hist, fut = config.grid, config.history, config.future_steps
    reach = 0.75 * min(grid.x_range[1], grid.y_range[1])
    voxeliser = PointToVoxel(vsize_xyz=list(grid.voxel_size), coors_range_xyz=grid.coors_range_xyz,
                             num_point_features=4, max_num_voxels=grid.max_voxels,
                             max_num_points_per_voxel=grid.max_points_per_voxel, device=torch.device("cpu"))
    past_t = (np.arange(hist) - (hist - 1)) * STEP_S
    future_t = (np.arange(1, fut + 1)) * STEP_S

    agent_mask = torch.zeros(num_scenes, max_agents, dtype=torch.bool)
    agent_types = torch.zeros(num_scenes, max_agents, dtype=torch.long)
    frame_mask = torch.zeros(num_scenes, max_agents, hist, dtype=torch.bool)
    history_to_now = torch.eye(3).repeat(num_scenes, max_agents, hist, 1, 1)
    agent_to_ego = torch.eye(3).repeat(num_scenes, max_agents, 1, 1)
    gt_boxes = torch.zeros(num_scenes, num_objects, 7)
    gt_classes = torch.full((num_scenes, num_objects), -1, dtype=torch.long)
    gt_future = torch.zeros(num_scenes, num_objects, fut, 2)
    gt_past = torch.zeros(num_scenes, num_objects, hist, 2)
    all_voxels, all_counts, all_coords = [], [], []

    for b in range(num_scenes):
        n_agents = agent_counts[b]
        ego_now = se2(rng.uniform(-50, 50), rng.uniform(-50, 50), rng.uniform(-math.pi, math.pi))
        # Agents: poses over history in the world. Agent 0 (ego) sits at ego_now at t.
        agent_paths = []
        for a in range(n_agents):
            is_infra = infrastructure and n_agents > 1 and a == n_agents - 1
            offset = np.zeros(2) if a == 0 else rng.uniform(-0.5, 0.5, 2) * reach
            start = _apply(ego_now, offset[None])[0]
            heading = math.atan2(ego_now[1, 0], ego_now[0, 0]) + (0.0 if a == 0 else rng.uniform(-1.0, 1.0))
            speed, yaw_rate = (0.0, 0.0) if is_infra else (rng.uniform(2, 8), rng.uniform(-0.15, 0.15))
            agent_paths.append(_moving(start, heading, speed, yaw_rate, past_t))
            agent_mask[b, a] = True
            agent_types[b, a] = int(is_infra)
            frame_mask[b, a] = True
            if drop_old_frames and a > 0 and hist > 1:
                frame_mask[b, a, 0] = False
        ego_from_world = np.linalg.inv(se2(*agent_paths[0][-1]))
        # Objects: curved paths around the ego, in the world.
        objects = []
        for m in range(num_objects):
            cls = int(rng.choice([0, 0, 0, 1, 2]))
            path_t = np.concatenate([past_t, future_t])
            for _ in range(100):
                centre = _apply(ego_now, rng.uniform(-1, 1, (1, 2)) * reach)[0]
                path = _moving(centre, rng.uniform(-math.pi, math.pi), rng.uniform(1, 10) if cls != 1 else 1.2,
                               rng.uniform(-0.3, 0.3), path_t)
                if all(np.hypot(*(path[hist - 1, :2] - other[hist - 1, :2])) >= min_gap for _, other in objects):
                    break
            objects.append((cls, path))
            size = CLASS_SIZES[cls]
            now_ego = _apply(ego_from_world, path[hist - 1:hist, :2])[0]
            yaw_ego = path[hist - 1, 2] + math.atan2(ego_from_world[1, 0], ego_from_world[0, 0])
            gt_boxes[b, m] = torch.tensor([*now_ego, GROUND_Z + size[2] / 2, *size,
                                           math.atan2(math.sin(yaw_ego), math.cos(yaw_ego))])
            gt_classes[b, m] = cls
            gt_past[b, m] = torch.from_numpy(_apply(ego_from_world, path[:hist, :2]))
            gt_future[b, m] = torch.from_numpy(_apply(ego_from_world, path[hist:, :2]))
        # Point clouds and transforms per agent-frame.
        for a in range(n_agents):
            now_pose = se2(*agent_paths[a][-1])
            agent_to_ego[b, a] = torch.from_numpy(ego_from_world @ now_pose).float()
            for t in range(hist):
                if not frame_mask[b, a, t]:
                    continue
                frame_pose = se2(*agent_paths[a][t])
                history_to_now[b, a, t] = torch.from_numpy(np.linalg.inv(now_pose) @ frame_pose).float()
                world_pts = [np.concatenate([_apply(frame_pose, rng.uniform(-1, 1, (ground_points, 2)) * reach * 1.3),
                                             np.full((ground_points, 1), GROUND_Z)], axis=1)]
                for m, (cls, path) in enumerate(objects):
                    if a == 0 and m < hidden_from_ego:
                        continue
                    centre = np.array([path[t, 0], path[t, 1], GROUND_Z + CLASS_SIZES[cls][2] / 2])
                    world_pts.append(_box_surface_points(centre, path[t, 2], CLASS_SIZES[cls], points_per_object, rng))
                pts = np.concatenate(world_pts)
                local_xy = _apply(np.linalg.inv(frame_pose), pts[:, :2])
                cloud = np.concatenate([local_xy, pts[:, 2:3], rng.uniform(0, 1, (len(pts), 1))], axis=1)
                voxels, coords, counts = voxeliser(torch.from_numpy(cloud).float())
                n = (b * max_agents + a) * hist + t
                all_voxels.append(voxels)
                all_counts.append(counts)
                all_coords.append(torch.cat([torch.full((len(coords), 1), n, dtype=torch.int32), coords.int()], 1))

    gt_mask = gt_classes >= 0
    return Batch(
        voxels=torch.cat(all_voxels), voxel_num_points=torch.cat(all_counts).int(), voxel_coords=torch.cat(all_coords),
        agent_mask=agent_mask, agent_types=agent_types, frame_mask=frame_mask, history_to_now=history_to_now,
        agent_to_ego=agent_to_ego, gt_boxes=gt_boxes, gt_classes=gt_classes, gt_mask=gt_mask,
        gt_track_ids=torch.where(gt_mask, torch.arange(num_objects).expand(num_scenes, -1), -1),
        gt_future=gt_future, gt_future_valid=gt_mask[..., None].expand(-1, -1, fut).clone(), gt_past=gt_past,
        gt_past_valid=gt_mask[..., None].expand(-1, -1, hist).clone(),
        keys=[f"synthetic__0__{b:06d}" for b in range(num_scenes)])
