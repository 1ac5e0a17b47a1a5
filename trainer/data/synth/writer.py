"""OpenCOOD-layout output: ``<scenario>/<agent_id>/<timestamp>.yaml`` + ``<timestamp>.bin``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from trainer.data.synth.traffic import Snapshot

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml's safe dumper when available (the same output as ``yaml.safe_dump``, faster)."""


def timestamp_name(frame: int) -> str:
    """Zero-padded frame number, e.g. 7 -> "000007"."""
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    return f"{frame:06d}"


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def _dump(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=None, sort_keys=True)


def object_entry(snapshot: Snapshot, i: int) -> dict:
    """The OpenCOOD ``vehicles`` entry of object ``i``: box centre = location + center, extent = half sizes."""
    x, y, _, length, width, height, yaw = snapshot.boxes[i]
    return {
        "angle": [0.0, _r(np.degrees(yaw), 3), 0.0],
        "center": [0.0, 0.0, _r(height / 2)],
        "extent": [_r(length / 2), _r(width / 2), _r(height / 2)],
        "location": [_r(x), _r(y), 0.0],
        "obj_type": snapshot.types[i],
    }


class FrameLabels:
    """The labels of one instant, rendered once per object and shared by every agent's YAML.

    ``render`` returns exactly what ``yaml.safe_dump(record, default_flow_style=None)`` writes for
    ``{"lidar_pose": ..., "ego_speed": ..., "vehicles": {...}}``, without re-serialising each object
    for every agent.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._fragments: dict[int, str] = {}

    def visible_ids(self, centre_xy: np.ndarray, radius: float, exclude_id: int | None) -> list[int]:
        """Sorted ids of objects within ``radius`` m of ``centre_xy``, without ``exclude_id``."""
        boxes = self.snapshot.boxes
        dist = np.hypot(boxes[:, 0] - centre_xy[0], boxes[:, 1] - centre_xy[1])
        return sorted(int(self.snapshot.ids[i]) for i in np.nonzero(dist <= radius)[0]
                      if int(self.snapshot.ids[i]) != exclude_id)

    def vehicles(self, ids: list[int]) -> dict:
        """The ``vehicles`` map for ``ids`` as plain Python data."""
        index = {int(obj_id): i for i, obj_id in enumerate(self.snapshot.ids)}
        return {obj_id: object_entry(self.snapshot, index[obj_id]) for obj_id in ids}

    def _render_all(self) -> None:
        """Serialise every object in one call and cut the text into per-object fragments."""
        text = _dump(self.vehicles(sorted(int(obj_id) for obj_id in self.snapshot.ids)))
        chunks: list[list[str]] = []
        for line in text.splitlines(True):
            if not line.startswith(" "):
                chunks.append([])
            chunks[-1].append("  " + line)
        for chunk in chunks:
            self._fragments[int(chunk[0].strip().rstrip(":"))] = "".join(chunk)

    def render(self, lidar_pose: list[float], ego_speed_kmh: float, ids: list[int]) -> str:
        if len(lidar_pose) != 6:
            raise ValueError(f"lidar_pose must have 6 values [x, y, z, roll, yaw, pitch], got {len(lidar_pose)}")
        head = _dump({"ego_speed": _r(ego_speed_kmh, 3), "lidar_pose": [_r(v) for v in lidar_pose]})
        if not ids:
            return head + "vehicles: {}\n"
        if not self._fragments:
            self._render_all()
        return head + "vehicles:\n" + "".join(self._fragments[obj_id] for obj_id in sorted(ids))


def write_agent_frame(agent_dir: Path, frame: int, yaml_text: str, points: np.ndarray) -> tuple[Path, Path]:
    """Write one agent-frame: the YAML text and the points [N, 4] float32 (x, y, z, intensity, sensor frame)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"points must be [N, 4] (x, y, z, intensity), got shape {points.shape}")
    agent_dir.mkdir(parents=True, exist_ok=True)
    name = timestamp_name(frame)
    yaml_path, bin_path = agent_dir / f"{name}.yaml", agent_dir / f"{name}.bin"
    yaml_path.write_text(yaml_text)
    bin_path.write_bytes(np.ascontiguousarray(points, dtype="<f4").tobytes())
    return yaml_path, bin_path
