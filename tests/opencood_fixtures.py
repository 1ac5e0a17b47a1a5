"""Writing small OpenCOOD-layout trees (test fixtures, also used by bench/loader.py; not shipped in the package).

``write_frame`` writes one agent's YAML + point file exactly as the converter expects to read
it; ``write_toy_scenario`` writes a deterministic scene of agents driving straight lines with
objects around them. This is a fixture writer, not the realistic synthetic generator
(``trainer.data.synth``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from trainer.data.pointio import write_bin, write_pcd


def vehicle_entry(location: list[float], yaw_deg: float, *, extent: list[float] | None = None,
                  center: list[float] | None = None, obj_type: str | None = "Car") -> dict:
    """One ``vehicles`` YAML entry (OpenCOOD fields; ``extent`` are half sizes; ``obj_type`` None: no such
    field, as OPV2V writes them)."""
    entry = {
        "angle": [0.0, float(yaw_deg), 0.0],
        "center": [float(v) for v in (center or [0.0, 0.0, 0.8])],
        "extent": [float(v) for v in (extent or [2.2, 0.9, 0.8])],
        "location": [float(v) for v in location],
    }
    if obj_type is not None:
        entry["obj_type"] = obj_type
    return entry


def write_frame(scenario_dir: Path | str, agent_id: int, timestamp: str, *, lidar_pose: list[float],
                vehicles: dict[int, dict], points: np.ndarray, fmt: str = "bin") -> Path:
    """Write ``scenario_dir/agent_id/timestamp.yaml`` and its point file; returns the YAML path.

    ``fmt`` is ``bin``, ``pcd`` (binary) or ``pcd-ascii``.
    """
    agent_dir = Path(scenario_dir) / str(agent_id)
    agent_dir.mkdir(parents=True, exist_ok=True)
    doc = {"lidar_pose": [float(v) for v in lidar_pose], "vehicles": {int(k): v for k, v in vehicles.items()}}
    yaml_path = agent_dir / f"{timestamp}.yaml"
    yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    if fmt == "bin":
        write_bin(agent_dir / f"{timestamp}.bin", points)
    elif fmt in ("pcd", "pcd-ascii"):
        write_pcd(agent_dir / f"{timestamp}.pcd", points, binary=fmt == "pcd")
    else:
        raise ValueError(f"fmt must be bin, pcd or pcd-ascii, got {fmt!r}")
    return yaml_path


def write_toy_scenario(scenario_dir: Path | str, *, frames: int = 40, vehicles: int = 2, infrastructure: int = 1,
                       objects: int = 6, points_per_frame: int = 2000, seed: int = 0, fmt: str = "bin") -> None:
    """A scene: ``vehicles`` CAVs (ids 100, 101, ...) and ``infrastructure`` units (ids -1, -2, ...)
    near the origin, ``objects`` cars (ids 1, 2, ...) driving at constant speed, 10 Hz frames
    ``000000``, ``000001``, ..., random points (uniform around each sensor, ground and boxes)."""
    rng = np.random.default_rng(seed)
    agent_ids = [100 + i for i in range(vehicles)] + [-(i + 1) for i in range(infrastructure)]
    start = {aid: rng.uniform(-20, 20, size=2) for aid in agent_ids}
    heading = {aid: rng.uniform(-180, 180) for aid in agent_ids}
    obj_start = rng.uniform(-40, 40, size=(objects, 2))
    obj_heading = rng.uniform(-180, 180, size=objects)
    obj_speed = rng.uniform(2, 10, size=objects)
    for f in range(frames):
        time = f / 10.0
        vehicles_now = {}
        for o in range(objects):
            d = np.radians(obj_heading[o])
            loc = obj_start[o] + obj_speed[o] * time * np.array([np.cos(d), np.sin(d)])
            vehicles_now[o + 1] = vehicle_entry([loc[0], loc[1], 0.0], obj_heading[o])
        poses = {}
        for aid in agent_ids:
            speed = 0.0 if aid < 0 else 5.0
            d = np.radians(heading[aid])
            xy = start[aid] + speed * time * np.array([np.cos(d), np.sin(d)])
            poses[aid] = [xy[0], xy[1], 6.0 if aid < 0 else 1.8, 0.0, heading[aid], 0.0]
            if aid >= 0:
                vehicles_now[aid] = vehicle_entry([xy[0], xy[1], 0.0], heading[aid])
        for aid in agent_ids:
            own = {k: v for k, v in vehicles_now.items() if k != aid}
            pts = np.empty((points_per_frame, 4), dtype=np.float32)
            pts[:, :2] = rng.uniform(-50, 50, size=(points_per_frame, 2))
            pts[:, 2] = -poses[aid][2] + rng.normal(0, 0.1, size=points_per_frame)
            pts[:, 3] = rng.uniform(0, 1, size=points_per_frame)
            write_frame(scenario_dir, aid, f"{f:06d}", lidar_pose=poses[aid], vehicles=own, points=pts, fmt=fmt)
