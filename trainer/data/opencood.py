"""Reading the OpenCOOD / V2XPnP-Seq source layout ``split/scenario/agent_id/timestamp.{yaml,pcd|bin}``.

Negative agent ids are infrastructure. Files whose names contain ``additional`` or ``camera_gt``
are not per-frame annotations and are ignored. Malformed files raise ``SourceFormatError``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from trainer.data.pointio import SourceFormatError, read_points
from trainer.data.sample import normalise_obj_type

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_IGNORED = ("additional", "camera_gt")
_AGENT_DIR = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class ObjectAnnotation:
    """One annotated object in the world frame."""

    center: tuple[float, float, float]
    """Box centre (location + center offset), world metres."""
    size: tuple[float, float, float]
    """Full sizes l, w, h (twice the YAML half extents)."""
    yaw_deg: float
    """World yaw in degrees (``angle[1]``)."""
    obj_type: str
    """Normalised V2XPnP object type (see ``sample.normalise_obj_type``)."""


@dataclass(frozen=True)
class FrameAnnotation:
    """One agent's YAML at one timestamp."""

    lidar_pose: np.ndarray
    """[6] float64 OpenCOOD pose x, y, z, roll, yaw, pitch (deg)."""
    objects: dict[int, ObjectAnnotation]


@dataclass
class AgentFrames:
    """The files of one agent in one scenario, by timestamp name."""

    agent_id: int
    yaml_files: dict[str, Path] = field(default_factory=dict)
    point_files: dict[str, Path] = field(default_factory=dict)

    @property
    def is_infrastructure(self) -> bool:
        return self.agent_id < 0


@dataclass
class ScenarioFiles:
    """All agents of one scenario and the sorted union of their timestamps."""

    name: str
    path: Path
    agents: dict[int, AgentFrames]
    timestamps: list[str]


def _timestamp_order(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _is_frame_file(path: Path) -> bool:
    return path.is_file() and not any(tag in path.name for tag in _IGNORED)


def scan_scenario(path: Path) -> ScenarioFiles:
    """Index one scenario directory (its agent sub-directories and their frame files)."""
    agents: dict[int, AgentFrames] = {}
    for agent_dir in sorted(p for p in path.iterdir() if p.is_dir() and _AGENT_DIR.match(p.name)):
        frames = AgentFrames(agent_id=int(agent_dir.name))
        for f in agent_dir.iterdir():
            if not _is_frame_file(f):
                continue
            if f.suffix == ".yaml":
                frames.yaml_files[f.stem] = f
            elif f.suffix in (".pcd", ".bin"):
                if f.stem in frames.point_files:
                    raise SourceFormatError(f, f"two point files for timestamp {f.stem} (.pcd and .bin)")
                frames.point_files[f.stem] = f
        if frames.yaml_files:
            agents[frames.agent_id] = frames
    stamps = sorted({ts for a in agents.values() for ts in a.yaml_files}, key=_timestamp_order)
    return ScenarioFiles(name=path.name, path=path, agents=agents, timestamps=stamps)


def scan_split(root: Path | str) -> list[ScenarioFiles]:
    """Scenarios of a split directory (``root/scenario/agent_id/...``), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"source split directory {root} does not exist")
    scenarios = [scan_scenario(p) for p in sorted(root.iterdir()) if p.is_dir()]
    return [s for s in scenarios if s.agents]


def _vector(path: Path, value: object, what: str, length: int) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise SourceFormatError(path, f"{what} must be a list of {length} numbers, got {value!r}")
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exn:
        raise SourceFormatError(path, f"{what} has a non-numeric entry: {value!r}") from exn
    if not all(math.isfinite(v) for v in out):
        raise SourceFormatError(path, f"{what} has a non-finite entry: {value!r}")
    return out


def parse_frame(path: Path, data: object, default_obj_type: str | None = None) -> FrameAnnotation:
    """Validate a parsed YAML document and turn it into a ``FrameAnnotation``.

    An entry without ``obj_type`` gets ``default_obj_type``; with None that is a ``SourceFormatError``.
    """
    if not isinstance(data, dict):
        raise SourceFormatError(path, f"top level must be a mapping, got {type(data).__name__}")
    if "lidar_pose" not in data:
        raise SourceFormatError(path, "missing field 'lidar_pose'")
    pose = np.array(_vector(path, data["lidar_pose"], "lidar_pose", 6), dtype=np.float64)
    vehicles = data.get("vehicles") or {}
    if not isinstance(vehicles, dict):
        raise SourceFormatError(path, "'vehicles' must be a mapping from object id to fields")
    objects: dict[int, ObjectAnnotation] = {}
    for obj_id, ann in vehicles.items():
        where = f"vehicles[{obj_id}]"
        try:
            oid = int(obj_id)
        except (TypeError, ValueError) as exn:
            raise SourceFormatError(path, f"object id {obj_id!r} is not an integer") from exn
        if not isinstance(ann, dict):
            raise SourceFormatError(path, f"{where} must be a mapping")
        for name in ("angle", "center", "extent", "location"):
            if name not in ann:
                raise SourceFormatError(path, f"{where} lacks field '{name}'")
        angle = _vector(path, ann["angle"], f"{where}.angle", 3)
        offset = _vector(path, ann["center"], f"{where}.center", 3)
        extent = _vector(path, ann["extent"], f"{where}.extent", 3)
        location = _vector(path, ann["location"], f"{where}.location", 3)
        if min(extent) < 0:
            raise SourceFormatError(path, f"{where}.extent has a negative half size {extent}")
        obj_type = ann.get("obj_type", default_obj_type)
        if obj_type is None:
            raise SourceFormatError(path, f"{where} has no obj_type; if the dataset writes none (OPV2V, V2XSet), "
                                          "convert with --taxonomy opv2v or --default-obj-type car")
        if not isinstance(obj_type, str) or not normalise_obj_type(obj_type):
            raise SourceFormatError(path, f"{where}.obj_type must be a type name, got {obj_type!r}")
        objects[oid] = ObjectAnnotation(
            center=tuple(l + c for l, c in zip(location, offset)),  # type: ignore[arg-type]
            size=tuple(2.0 * e for e in extent),  # type: ignore[arg-type]
            yaw_deg=angle[1],
            obj_type=normalise_obj_type(obj_type),
        )
    return FrameAnnotation(lidar_pose=pose, objects=objects)


def read_frame_yaml(path: Path, default_obj_type: str | None = None) -> FrameAnnotation:
    """Read and validate one per-frame YAML (``default_obj_type``: see ``parse_frame``)."""
    try:
        with open(path, "rb") as f:
            data = yaml.load(f, Loader=_YAML_LOADER)
    except yaml.YAMLError as exn:
        raise SourceFormatError(path, f"invalid YAML ({str(exn).splitlines()[0]})") from exn
    return parse_frame(path, data, default_obj_type)


def read_frame_points(agent: AgentFrames, timestamp: str) -> np.ndarray:
    """[N, 4] float32 LiDAR points of ``agent`` at ``timestamp`` (sensor frame)."""
    if timestamp not in agent.point_files:
        raise SourceFormatError(agent.yaml_files[timestamp], "has no matching .pcd or .bin point file")
    return read_points(agent.point_files[timestamp])
