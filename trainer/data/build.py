"""Cutting one ``Sample`` (scenario, ego, t) out of an OpenCOOD scenario.

``select_agents`` is the pure collaboration rule; ``FrameReader`` reads (and caches) source files
with the skip-bad policy; ``build_sample`` assembles agents, history and targets.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from trainer.data.box_range import boxes_in_range
from trainer.data.config import ConvertConfig
from trainer.data.delayed_frames import DelayedFrames
from trainer.data.geometry import world_xy_to_bev, wrap_angle
from trainer.data.opencood import FrameAnnotation, ScenarioFiles, read_frame_points, read_frame_yaml
from trainer.data.point_clean import clean_points
from trainer.data.pointio import SourceFormatError
from trainer.data.sample import SCHEMA_VERSION, V2XPNP_OBJ_TYPES, Sample, frame_key


def ego_allowed(mode: str, ego_id: int) -> bool:
    """vc / v2v need a vehicle ego (id >= 0); ic / i2i an infrastructure ego (id < 0)."""
    return (ego_id >= 0) if mode in ("vc", "v2v") else (ego_id < 0)


def select_agents(
    mode: str, ego_id: int, positions: dict[int, np.ndarray], *, comm_range: float, max_agents: int,
    max_infra_vc: int = 2,
) -> list[int]:
    """Agent ids of one sample, ego first, then collaborators nearest first (ties by id).

    ``positions`` maps every agent present at t (ego included) to its world (x, y). Collaborators
    must be within ``comm_range`` of the ego; vc allows vehicles and at most ``max_infra_vc``
    infrastructure units, ic vehicles and infrastructure, v2v vehicles only, i2i infrastructure only.
    """
    if not ego_allowed(mode, ego_id):
        raise ValueError(f"mode {mode!r} does not allow ego {ego_id} ({'infrastructure' if ego_id < 0 else 'vehicle'})")
    ego_xy = np.asarray(positions[ego_id], dtype=np.float64)
    candidates = []
    for aid, xy in positions.items():
        if aid == ego_id:
            continue
        if (mode == "v2v" and aid < 0) or (mode == "i2i" and aid >= 0):
            continue
        dist = float(np.hypot(*(np.asarray(xy, dtype=np.float64) - ego_xy)))
        if dist <= comm_range:
            candidates.append((dist, aid))
    chosen = [ego_id]
    infra = 0
    for _, aid in sorted(candidates):
        if len(chosen) >= max_agents:
            break
        if mode == "vc" and aid < 0:
            if infra >= max_infra_vc:
                continue
            infra += 1
        chosen.append(aid)
    return chosen


class FrameReader:
    """Reads one scenario's YAML (cached) and point files (small LRU), applying the skip-bad policy and
    ``cfg``'s reading options (default object type, point cleaning).

    With ``skip_bad`` a malformed file makes its frame count as missing and is recorded in
    ``bad_files`` (path -> reason); without it the ``SourceFormatError`` propagates. ``dropped_points``
    holds, per point file read, the rows cleaning dropped (non-finite, ego footprint).
    """

    def __init__(self, scenario: ScenarioFiles, cfg: ConvertConfig, *, skip_bad: bool, point_cache: int = 64) -> None:
        self.scenario = scenario
        self.cfg = cfg
        self.skip_bad = skip_bad
        self.bad_files: dict[str, str] = {}
        self.dropped_points: dict[str, tuple[int, int]] = {}
        self._yaml: dict[tuple[int, str], FrameAnnotation | None] = {}
        self._points: OrderedDict[tuple[int, str], np.ndarray | None] = OrderedDict()
        self._point_cache = point_cache

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except SourceFormatError as exn:
            if not self.skip_bad:
                raise
            self.bad_files[exn.path] = exn.what
            return None

    def annotation(self, agent_id: int, timestamp: str) -> FrameAnnotation | None:
        """The agent's YAML at ``timestamp``; None if it has none (or it is bad and skipped)."""
        key = (agent_id, timestamp)
        if key not in self._yaml:
            files = self.scenario.agents[agent_id].yaml_files
            self._yaml[key] = self._guard(read_frame_yaml, files[timestamp], self.cfg.default_obj_type) \
                if timestamp in files else None
        return self._yaml[key]

    def points(self, agent_id: int, timestamp: str) -> np.ndarray | None:
        """[N, 4] sensor-frame points; None if missing-and-skipped or bad-and-skipped."""
        key = (agent_id, timestamp)
        if key in self._points:
            self._points.move_to_end(key)
            return self._points[key]
        pts = self._guard(read_frame_points, self.scenario.agents[agent_id], timestamp)
        if pts is not None:
            cleaned = clean_points(pts, zero_intensity=self.cfg.zero_intensity, mask_ego_points=self.cfg.mask_ego_points)
            self.dropped_points[str(self.scenario.agents[agent_id].point_files[timestamp])] = (cleaned.nonfinite,
                                                                                            cleaned.ego)
            pts = cleaned.points
        self._points[key] = pts
        if len(self._points) > self._point_cache:
            self._points.popitem(last=False)
        return pts


def sample_times(scenario: ScenarioFiles, ego_id: int, cfg: ConvertConfig) -> list[int]:
    """Indices t into ``scenario.timestamps`` at which ``ego_id`` yields a sample."""
    n = len(scenario.timestamps)
    first = (cfg.history - 1) * cfg.history_stride if cfg.full_windows else 0
    last = n - 1 - cfg.future * cfg.future_stride if cfg.full_windows else n - 1
    own = scenario.agents[ego_id].yaml_files
    return [i for i in range(first, last + 1, cfg.sample_stride) if scenario.timestamps[i] in own]


def history_indices(t: int, cfg: ConvertConfig, delay: int = 0) -> list[int]:
    """Timestamp indices of the history steps (oldest first) of a sample at index ``t``, ``delay`` raw frames late."""
    return [t - delay - (cfg.history - 1 - k) * cfg.history_stride for k in range(cfg.history)]


def read_window(reader: FrameReader, agent_id: int, indices: list[int]
                ) -> tuple[np.ndarray, list[str | None], list[np.ndarray | None]]:
    """One agent's frames at timestamp ``indices``: (poses [T, 6], NaN where missing; frame keys, None where
    missing; points [n, 4] or None). A frame exists where the agent has a readable YAML and point file."""
    scn = reader.scenario
    poses = np.full((len(indices), 6), np.nan)
    keys: list[str | None] = [None] * len(indices)
    clouds: list[np.ndarray | None] = [None] * len(indices)
    for k, idx in enumerate(indices):
        if idx < 0 or scn.timestamps[idx] not in scn.agents[agent_id].yaml_files:
            continue
        ann = reader.annotation(agent_id, scn.timestamps[idx])
        pts = reader.points(agent_id, scn.timestamps[idx]) if ann is not None else None
        if ann is None or pts is None:
            continue
        poses[k], keys[k], clouds[k] = ann.lidar_pose, frame_key(scn.name, agent_id, scn.timestamps[idx]), pts
    return poses, keys, clouds


def build_delayed(reader: FrameReader, sample: Sample, t: int, cfg: ConvertConfig) -> DelayedFrames:
    """The collaborators' history windows of ``sample`` (cut at index ``t``) delayed by 1..``cfg.delay_frames``
    raw frames (``trainer.data.delayed_frames``); the ego's rows are empty."""
    agents = sample.meta["agent_ids"]
    levels, clouds = [], {}
    poses = np.full((cfg.delay_frames, len(agents), cfg.history, 6), np.nan)
    for d in range(1, cfg.delay_frames + 1):
        level: list[list[str | None]] = [[None] * cfg.history]
        for a, aid in enumerate(agents[1:], start=1):
            poses[d - 1, a], names, points = read_window(reader, aid, history_indices(t, cfg, d))
            level.append(names)
            clouds.update((k, p) for k, p in zip(names, points) if k is not None)
        levels.append(level)
    return DelayedFrames(keys=levels, poses=poses, clouds=clouds)


def _lookup_center(reader: FrameReader, order: list[int], timestamp: str, obj_id: int) -> np.ndarray | None:
    for aid in order:
        if timestamp not in reader.scenario.agents[aid].yaml_files:
            continue
        ann = reader.annotation(aid, timestamp)
        if ann is not None and obj_id in ann.objects:
            return np.asarray(ann.objects[obj_id].center, dtype=np.float64)
    return None


def build_sample(reader: FrameReader, ego_id: int, t: int, cfg: ConvertConfig) -> Sample | None:
    """The sample (scenario, ``ego_id``, ``timestamps[t]``), or None if the ego frame at t is unusable."""
    scn = reader.scenario
    stamps = scn.timestamps
    ego_ann = reader.annotation(ego_id, stamps[t])
    if ego_ann is None or reader.points(ego_id, stamps[t]) is None:
        return None
    present = {}
    for aid in scn.agents:
        ann = reader.annotation(aid, stamps[t]) if stamps[t] in scn.agents[aid].yaml_files else None
        if ann is not None:
            present[aid] = ann.lidar_pose[:2]
    agents = select_agents(cfg.mode, ego_id, present, comm_range=cfg.comm_range, max_agents=cfg.max_agents,
                           max_infra_vc=cfg.max_infra_vc)
    hist_idx = history_indices(t, cfg)
    windows = [read_window(reader, aid, hist_idx) for aid in agents]
    poses = np.stack([pose for pose, _, _ in windows])
    keys = [names for _, names, _ in windows]
    frame_valid = np.array([[k is not None for k in names] for names in keys], dtype=bool)
    counts = np.array([[0 if c is None else len(c) for c in clouds] for _, _, clouds in windows], dtype=np.int64)
    chunks = [c for _, _, clouds in windows for c in clouds if c is not None]
    points = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 4), np.float32)

    ego_pose = ego_ann.lidar_pose
    objects = {}
    for aid in agents:
        ann = reader.annotation(aid, stamps[t])
        for oid, obj in ann.objects.items():
            if oid != ego_id and oid not in objects:
                objects[oid] = obj
    ids = list(objects)
    centers = np.array([objects[i].center for i in ids], dtype=np.float64).reshape(-1, 3)
    all_boxes = np.zeros((len(ids), 7), dtype=np.float64)
    if ids:
        all_boxes[:, :2] = world_xy_to_bev(centers[:, :2], ego_pose)
        all_boxes[:, 2] = centers[:, 2] - ego_pose[2]
        all_boxes[:, 3:6] = [objects[i].size for i in ids]
        all_boxes[:, 6] = wrap_angle(np.radians([objects[i].yaw_deg - ego_pose[4] for i in ids]))
    keep = boxes_in_range(all_boxes, cfg.target_range, cfg.box_range_rule)
    ids = [i for i, k in zip(ids, keep) if k]
    boxes = all_boxes[keep].astype(np.float32)

    type_names = list(V2XPNP_OBJ_TYPES)
    for i in ids:
        if objects[i].obj_type not in type_names:
            type_names.append(objects[i].obj_type)
    m = len(ids)

    lookup_order = agents + sorted(a for a in scn.agents if a not in agents)
    fut_idx = [t + (j + 1) * cfg.future_stride for j in range(cfg.future)]

    def trajectory(indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        traj = np.zeros((m, len(indices), 2), dtype=np.float32)
        valid = np.zeros((m, len(indices)), dtype=bool)
        for s, idx in enumerate(indices):
            if not 0 <= idx < len(stamps):
                continue
            for o, oid in enumerate(ids):
                c = _lookup_center(reader, lookup_order, stamps[idx], oid)
                if c is not None:
                    traj[o, s] = world_xy_to_bev(c[None, :2], ego_pose)[0]
                    valid[o, s] = True
        return traj, valid

    future, future_valid = trajectory(fut_idx)
    past, past_valid = trajectory(hist_idx)
    meta = {
        "schema_version": SCHEMA_VERSION, "scenario": scn.name, "ego_id": int(ego_id), "timestamp": stamps[t],
        "mode": cfg.mode, "agent_ids": [int(a) for a in agents],
        "agent_types": ["infrastructure" if a < 0 else "vehicle" for a in agents],
        "history_stride": cfg.history_stride, "future_stride": cfg.future_stride,
        "raw_rate_hz": cfg.raw_rate_hz, "obj_type_names": type_names,
        "source": f"turbotrain.convert schema {SCHEMA_VERSION} from {scn.path}",
    }
    return Sample(
        meta=meta, points=points, point_counts=counts, poses=poses, frame_valid=frame_valid, frame_keys=keys,
        boxes=boxes,
        obj_types=np.array([type_names.index(objects[i].obj_type) for i in ids], dtype=np.int64),
        track_ids=np.array(ids, dtype=np.int64), future=future, future_valid=future_valid,
        past=past, past_valid=past_valid,
    )
