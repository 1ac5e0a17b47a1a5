"""The on-disk sample (docs/DATA_FORMAT.md, schema v2): one typed record plus encode / decode /
validate. This module is the single owner of ``SCHEMA_VERSION``; writers (converter, synthetic
generator) go through ``trainer.data.shard_write`` (:func:`encode_sample`, :func:`encode_frame`),
readers through ``trainer.data.shard_read`` (:func:`decode_frame`, :func:`decode_sample`).

A shard holds two kinds of record: **frame records** (one agent-frame's points, written once per
shard) and **sample records** (everything else of a sample, plus the [A][T] keys of its frames).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from trainer.data.npy import npy_bytes, npy_view

SCHEMA_VERSION = 2
"""Version of the on-disk contract written and accepted by this code (1: points inside every sample)."""

MODES = ("vc", "ic", "v2v", "i2i")
AGENT_TYPE_NAMES = ("vehicle", "infrastructure")

V2XPNP_OBJ_TYPES = [
    "car", "pedestrian", "scooter", "motorcycle", "bicycle",
    "truck", "van", "concretetruck", "bus", "barrier",
]
"""The V2XPnP-Seq object taxonomy, normalised (lower case, letters and digits only)."""

ARRAY_FIELDS = {
    # Sample attribute -> (dtype, rank)
    "points": (np.float32, 2),
    "point_counts": (np.int64, 2),
    "poses": (np.float64, 3),
    "frame_valid": (np.bool_, 2),
    "boxes": (np.float32, 2),
    "obj_types": (np.int64, 1),
    "track_ids": (np.int64, 1),
    "future": (np.float32, 3),
    "future_valid": (np.bool_, 2),
    "past": (np.float32, 3),
    "past_valid": (np.bool_, 2),
}
FRAME_FIELDS = ("points", "point_counts")
"""Arrays rebuilt from the sample's frame records instead of stored in the sample record."""
ARRAY_MEMBERS = {f"{name}.npy": spec for name, spec in ARRAY_FIELDS.items() if name not in FRAME_FIELDS}
"""The ``.npy`` members of a sample record: member name -> (dtype, rank)."""
FRAME_LIST_MEMBER = "frames.json"
"""Sample record member: the [A][T] frame keys (null for a missing frame), as JSON."""
FRAME_MEMBER = "frame.npy"
"""Frame record member: one agent-frame's points, float32 [n, 4]."""
FRAMES_KEY = "__frames__"
"""Set by the reader on a sample record: frame key -> points [n, 4], or why that frame is unusable."""
META_FIELDS = (
    "schema_version", "scenario", "ego_id", "timestamp", "mode", "agent_ids", "agent_types",
    "history_stride", "future_stride", "raw_rate_hz", "obj_type_names", "source",
)
_KEY_OK = re.compile(r"^[A-Za-z0-9_-]+$")


class SampleFormatError(ValueError):
    """A sample is malformed (missing member or frame, bad dtype/shape, inconsistent sizes)."""


class SchemaVersionError(RuntimeError):
    """A sample was written with a schema version this reader does not accept (never skipped)."""


def normalise_obj_type(name: str) -> str:
    """``"Concrete Truck"`` -> ``"concretetruck"``: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def sanitise_key_part(text: str) -> str:
    """Replace characters not allowed in a WebDataset key (``[A-Za-z0-9_-]``) by ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", str(text))


def sample_key(scenario: str, ego_id: int, timestamp: str) -> str:
    """``{scenario}__{ego_id}__{timestamp}`` with unsafe characters replaced."""
    return f"{sanitise_key_part(scenario)}__{int(ego_id)}__{sanitise_key_part(timestamp)}"


def frame_key(scenario: str, agent_id: int, timestamp: str) -> str:
    """``{scenario}__a{agent_id}__{timestamp}``: the key of one agent-frame's record, unsafe characters replaced."""
    return f"{sanitise_key_part(scenario)}__a{int(agent_id)}__{sanitise_key_part(timestamp)}"


@dataclass(kw_only=True)
class Sample:
    """One scene snapshot (scenario, ego, t). A agents, T history frames, M objects, T_f steps."""

    meta: dict
    """The ``meta.json`` object (fields: ``META_FIELDS``)."""
    points: np.ndarray
    """[N, 4] float32 x, y, z, intensity in each agent-frame's LiDAR sensor frame, agent-major."""
    point_counts: np.ndarray
    """[A, T] int64 points per agent-frame."""
    poses: np.ndarray
    """[A, T, 6] float64 OpenCOOD LiDAR poses (deg), NaN where the frame is missing."""
    frame_valid: np.ndarray
    """[A, T] bool."""
    frame_keys: list[list[str | None]]
    """[A][T] key of each agent-frame's record (``frame_key``), None where ``frame_valid`` is False."""
    boxes: np.ndarray
    """[M, 7] float32 x, y, z, l, w, h, yaw in the ego BEV frame at t (full sizes, radians)."""
    obj_types: np.ndarray
    """[M] int64 index into ``meta["obj_type_names"]``."""
    track_ids: np.ndarray
    """[M] int64."""
    future: np.ndarray
    """[M, T_f, 2] float32."""
    future_valid: np.ndarray
    """[M, T_f] bool."""
    past: np.ndarray
    """[M, T, 2] float32."""
    past_valid: np.ndarray
    """[M, T] bool."""
    key: str = field(default="")
    """Sample key; derived from meta when empty."""

    def __post_init__(self) -> None:
        if not self.key and all(k in self.meta for k in ("scenario", "ego_id", "timestamp")):
            self.key = sample_key(self.meta["scenario"], self.meta["ego_id"], self.meta["timestamp"])

    def agent_points(self, agent: int, frame: int) -> np.ndarray:
        """[n, 4] points of one agent-frame (a view into ``points``)."""
        flat = self.point_counts.reshape(-1)
        idx = agent * self.point_counts.shape[1] + frame
        start = int(flat[:idx].sum())
        return self.points[start : start + int(flat[idx])]


def sample_frames(sample: Sample) -> Iterator[tuple[str, np.ndarray]]:
    """(frame key, [n, 4] points view) of every present agent-frame, agent-major then time."""
    starts = np.concatenate([[0], np.cumsum(sample.point_counts.reshape(-1))])
    for i, key in enumerate(k for row in sample.frame_keys for k in row):
        if key is not None:
            yield key, sample.points[starts[i] : starts[i + 1]]


def frame_grid_problem(keys: object) -> str | None:
    """Why ``keys`` is not an [A][T] grid (A, T >= 1) of frame keys or None; None if it is one."""
    if not isinstance(keys, list) or not keys or not all(isinstance(row, list) for row in keys):
        return "must be a non-empty list of lists"
    if len({len(row) for row in keys}) != 1 or not keys[0]:
        return "must have non-empty rows of equal length"
    bad = [k for row in keys for k in row if k is not None and not (isinstance(k, str) and _KEY_OK.match(k))]
    return f"entries must be null or a key of [A-Za-z0-9_-], got {bad[0]!r}" if bad else None


def validate_sample(sample: Sample) -> None:
    """Raise ``SchemaVersionError`` / ``SampleFormatError`` if ``sample`` breaks the contract."""
    meta = sample.meta
    if not isinstance(meta, dict):
        raise SampleFormatError(f"{sample.key}: meta.json is not a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{sample.key}: schema_version {version!r} but this reader accepts {SCHEMA_VERSION}; "
            "re-convert the data or use a matching TurboTrain version"
        )
    missing = [f for f in META_FIELDS if f not in meta]
    if missing:
        raise SampleFormatError(f"{sample.key}: meta.json lacks {missing}")
    if meta["mode"] not in MODES:
        raise SampleFormatError(f"{sample.key}: meta.mode {meta['mode']!r} not in {MODES}")
    if not _KEY_OK.match(sample.key or ""):
        raise SampleFormatError(f"bad sample key {sample.key!r}: only [A-Za-z0-9_-] allowed")
    for name, (dtype, rank) in ARRAY_FIELDS.items():
        arr = getattr(sample, name)
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != rank:
            got = (getattr(arr, "dtype", type(arr)), getattr(arr, "ndim", None))
            raise SampleFormatError(f"{sample.key}: {name} must be {np.dtype(dtype)} rank {rank}, got {got}")
    a, t = sample.frame_valid.shape
    problem = frame_grid_problem(sample.frame_keys)
    if problem is not None:
        raise SampleFormatError(f"{sample.key}: {FRAME_LIST_MEMBER} {problem}")
    named = np.array([[k is not None for k in row] for row in sample.frame_keys])
    if named.shape != (a, t) or not np.array_equal(named, sample.frame_valid):
        raise SampleFormatError(f"{sample.key}: {FRAME_LIST_MEMBER} must name a frame exactly where "
                                f"frame_valid is true ([{a}][{t}])")
    m = sample.boxes.shape[0]
    t_f = sample.future.shape[1]
    checks = {
        "points": (sample.points.shape[1] == 4 and sample.points.shape[0] == int(sample.point_counts.sum())),
        "point_counts": sample.point_counts.shape == (a, t) and bool((sample.point_counts >= 0).all()),
        "poses.npy": sample.poses.shape == (a, t, 6),
        "boxes.npy": sample.boxes.shape == (m, 7),
        "obj_types.npy": sample.obj_types.shape == (m,)
        and bool(((sample.obj_types >= 0) & (sample.obj_types < len(meta["obj_type_names"]))).all()),
        "track_ids.npy": sample.track_ids.shape == (m,),
        "future.npy": sample.future.shape == (m, t_f, 2),
        "future_valid.npy": sample.future_valid.shape == (m, t_f),
        "past.npy": sample.past.shape == (m, t, 2),
        "past_valid.npy": sample.past_valid.shape == (m, t),
        "meta.json": len(meta["agent_ids"]) == a and len(meta["agent_types"]) == a and a >= 1,
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise SampleFormatError(f"{sample.key}: inconsistent shapes in {bad} (A={a}, T={t}, M={m}, T_f={t_f})")
    if bool((sample.point_counts[~named] != 0).any()):
        raise SampleFormatError(f"{sample.key}: point_counts must be 0 for a missing frame")
    if not bool(sample.frame_valid[0, -1]):
        raise SampleFormatError(f"{sample.key}: the ego has no frame at the current time")
    if any(name not in AGENT_TYPE_NAMES for name in meta["agent_types"]):
        raise SampleFormatError(f"{sample.key}: agent_types must be in {AGENT_TYPE_NAMES}")


def encode_frame(key: str, points: np.ndarray) -> dict[str, bytes | str]:
    """One agent-frame's points [n, 4] float32 -> a frame record ``{"__key__": key, "frame.npy": bytes}``."""
    return {"__key__": key, FRAME_MEMBER: npy_bytes(np.ascontiguousarray(points, dtype=np.float32))}


def encode_sample(sample: Sample) -> dict[str, bytes | str]:
    """Validated ``sample`` -> its sample record ``{"__key__": key, member: bytes, ...}`` (no points:
    those go into the frame records named by ``frames.json``, see ``sample_frames``)."""
    validate_sample(sample)
    record: dict[str, bytes | str] = {"__key__": sample.key}
    record["meta.json"] = json.dumps(sample.meta, sort_keys=True).encode("utf-8")
    record[FRAME_LIST_MEMBER] = json.dumps(sample.frame_keys).encode("utf-8")
    for member in ARRAY_MEMBERS:
        record[member] = npy_bytes(np.ascontiguousarray(getattr(sample, member[: -len(".npy")])))
    return record


def decode_frame(record: dict) -> np.ndarray:
    """A frame record -> its points [n, 4] float32 (a read-only view); ``SampleFormatError`` if malformed."""
    key = str(record.get("__key__", "?"))
    try:
        points = npy_view(record[FRAME_MEMBER])
    except (KeyError, ValueError, OSError, EOFError) as exn:
        raise SampleFormatError(f"frame {key}: {FRAME_MEMBER} is not a valid .npy ({exn})") from exn
    if points.dtype != np.float32 or points.ndim != 2 or points.shape[1] != 4:
        raise SampleFormatError(f"frame {key}: {FRAME_MEMBER} must be float32 [n, 4], got {points.dtype} "
                                f"{list(points.shape)}")
    return points


def _json_member(record: dict, member: str) -> object:
    """The parsed JSON member ``member`` of ``record``; ``SampleFormatError`` if missing or not JSON."""
    if member not in record:
        raise SampleFormatError(f"{record.get('__key__', '?')}: missing member {member}")
    try:
        return json.loads(record[member])
    except (ValueError, UnicodeDecodeError) as exn:
        raise SampleFormatError(f"{record.get('__key__', '?')}: {member} is not valid JSON ({exn})") from exn


def frame_keys_of(record: dict) -> list[list[str | None]]:
    """The [A][T] frame keys a sample record names (its ``frames.json``); ``SampleFormatError`` if malformed."""
    keys = _json_member(record, FRAME_LIST_MEMBER)
    problem = frame_grid_problem(keys)
    if problem is not None:
        raise SampleFormatError(f"{record.get('__key__', '?')}: {FRAME_LIST_MEMBER} {problem}")
    return keys  # type: ignore[return-value]


def _gather_points(key: str, frame_keys: list[list[str | None]],
                   frames: Mapping[str, np.ndarray | str]) -> tuple[np.ndarray, np.ndarray]:
    """(points [N, 4] float32, point_counts [A, T] int64), both read-only, from the sample's frames."""
    counts = np.zeros((len(frame_keys), len(frame_keys[0])), dtype=np.int64)
    chunks = []
    for a, row in enumerate(frame_keys):
        for k, name in enumerate(row):
            if name is None:
                continue
            found = frames.get(name)
            if found is None:
                raise SampleFormatError(f"{key}: frame {name} is not in its shard (before this sample)")
            if isinstance(found, str):
                raise SampleFormatError(f"{key}: unusable {found}")
            counts[a, k] = len(found)
            chunks.append(found)
    points = np.concatenate(chunks) if chunks else np.zeros((0, 4), np.float32)
    points.flags.writeable = counts.flags.writeable = False
    return points, counts


def decode_sample(record: dict) -> Sample:
    """A sample record of raw bytes, its frames attached by the reader (``FRAMES_KEY``) -> a validated ``Sample``.

    Raises ``SchemaVersionError`` for another schema version (checked first, so a shard of another
    version is reported as such) and ``SampleFormatError`` for anything malformed, a missing or
    unusable frame included.
    """
    key = str(record.get("__key__", "?"))
    meta = _json_member(record, "meta.json")
    if isinstance(meta, dict) and meta.get("schema_version") != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{key} (from {record.get('__url__', '?')}): schema_version {meta.get('schema_version')!r}, "
            f"this reader accepts {SCHEMA_VERSION}"
        )
    frame_keys = frame_keys_of(record)
    arrays = {}
    for member in ARRAY_MEMBERS:
        if member not in record:
            raise SampleFormatError(f"{key}: missing member {member}")
        try:
            arrays[member[: -len(".npy")]] = npy_view(record[member])
        except (ValueError, OSError, EOFError) as exn:
            raise SampleFormatError(f"{key}: member {member} is not a valid .npy ({exn})") from exn
    points, counts = _gather_points(key, frame_keys, record.get(FRAMES_KEY, {}))
    sample = Sample(meta=meta, key=key, frame_keys=frame_keys, points=points, point_counts=counts, **arrays)
    validate_sample(sample)
    return sample
