"""The on-disk sample (docs/DATA_FORMAT.md, schema v1): one typed record plus encode / decode /
validate. This module is the single owner of ``SCHEMA_VERSION``; writers (converter, synthetic
generator) call :func:`encode_sample`, readers call :func:`decode_sample`.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field

import numpy as np

SCHEMA_VERSION = 1
"""Version of the on-disk contract written and accepted by this code."""

MODES = ("vc", "ic", "v2v", "i2i")
AGENT_TYPE_NAMES = ("vehicle", "infrastructure")

V2XPNP_OBJ_TYPES = [
    "car", "pedestrian", "scooter", "motorcycle", "bicycle",
    "truck", "van", "concretetruck", "bus", "barrier",
]
"""The V2XPnP-Seq object taxonomy, normalised (lower case, letters and digits only)."""

ARRAY_MEMBERS = {
    # member name -> (dtype, rank)
    "points.npy": (np.float32, 2),
    "point_counts.npy": (np.int64, 2),
    "poses.npy": (np.float64, 3),
    "frame_valid.npy": (np.bool_, 2),
    "boxes.npy": (np.float32, 2),
    "obj_types.npy": (np.int64, 1),
    "track_ids.npy": (np.int64, 1),
    "future.npy": (np.float32, 3),
    "future_valid.npy": (np.bool_, 2),
    "past.npy": (np.float32, 3),
    "past_valid.npy": (np.bool_, 2),
}
META_FIELDS = (
    "schema_version", "scenario", "ego_id", "timestamp", "mode", "agent_ids", "agent_types",
    "history_stride", "future_stride", "raw_rate_hz", "obj_type_names", "source",
)
_KEY_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_NPY_V1 = b"\x93NUMPY\x01\x00"
_NPY_HEADER = re.compile(rb"\{'descr': '([<>|][biuf][0-9]{1,2})', 'fortran_order': (True|False), "
                         rb"'shape': \(((?:[0-9]+, ?)*[0-9]*)\), \} *\n")


class SampleFormatError(ValueError):
    """A sample is malformed (missing member, bad dtype/shape, inconsistent sizes)."""


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


def _array_name(member: str) -> str:
    return member[: -len(".npy")]


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
    for member, (dtype, rank) in ARRAY_MEMBERS.items():
        arr = getattr(sample, _array_name(member))
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != rank:
            got = (getattr(arr, "dtype", type(arr)), getattr(arr, "ndim", None))
            raise SampleFormatError(f"{sample.key}: {member} must be {np.dtype(dtype)} rank {rank}, got {got}")
    a, t = sample.frame_valid.shape
    m = sample.boxes.shape[0]
    t_f = sample.future.shape[1]
    checks = {
        "points.npy": (sample.points.shape[1] == 4 and sample.points.shape[0] == int(sample.point_counts.sum())),
        "point_counts.npy": sample.point_counts.shape == (a, t) and bool((sample.point_counts >= 0).all()),
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
    if not bool(sample.frame_valid[0, -1]):
        raise SampleFormatError(f"{sample.key}: the ego has no frame at the current time")
    if any(name not in AGENT_TYPE_NAMES for name in meta["agent_types"]):
        raise SampleFormatError(f"{sample.key}: agent_types must be in {AGENT_TYPE_NAMES}")


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of a ``.npy`` member.

    The header ``np.save`` writes (version 1.0, a plain numeric dtype) is matched directly; any
    other header goes through numpy's own parser (``ast.literal_eval``, ~10x slower per member).
    """
    if data[:8] == _NPY_V1 and len(data) >= 10:
        end = 10 + int.from_bytes(data[8:10], "little")
        found = _NPY_HEADER.fullmatch(data[10:end])
        if found is not None:
            descr, fortran, dims = found.groups()
            shape = tuple(int(d) for d in dims.split(b",") if d.strip())
            return shape, fortran == b"True", np.dtype(descr.decode()), end
    buf = io.BytesIO(data)
    version = np.lib.format.read_magic(buf)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(buf)
    return shape, fortran_order, dtype, buf.tell()


def _npy_view(data: bytes) -> np.ndarray:
    """A read-only array viewing the bytes of one ``.npy`` member (no copy; no pickled objects)."""
    shape, fortran_order, dtype, offset = _npy_header(data)
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    count = int(np.prod(shape, dtype=np.int64))
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran_order else "C")


def encode_sample(sample: Sample) -> dict[str, bytes | str]:
    """Validated ``sample`` -> a WebDataset record ``{"__key__": key, member: bytes, ...}``."""
    validate_sample(sample)
    record: dict[str, bytes | str] = {"__key__": sample.key}
    record["meta.json"] = json.dumps(sample.meta, sort_keys=True).encode("utf-8")
    for member in ARRAY_MEMBERS:
        record[member] = _npy_bytes(np.ascontiguousarray(getattr(sample, _array_name(member))))
    return record


def decode_sample(record: dict) -> Sample:
    """A WebDataset record of raw bytes -> a validated ``Sample``.

    Raises ``SchemaVersionError`` for another schema version (checked first, so a shard of another
    version is reported as such) and ``SampleFormatError`` for anything malformed.
    """
    key = str(record.get("__key__", "?"))
    if "meta.json" not in record:
        raise SampleFormatError(f"{key}: missing member meta.json")
    try:
        meta = json.loads(record["meta.json"])
    except (ValueError, UnicodeDecodeError) as exn:
        raise SampleFormatError(f"{key}: meta.json is not valid JSON ({exn})") from exn
    if isinstance(meta, dict) and meta.get("schema_version") != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{key} (from {record.get('__url__', '?')}): schema_version {meta.get('schema_version')!r}, "
            f"this reader accepts {SCHEMA_VERSION}"
        )
    arrays = {}
    for member in ARRAY_MEMBERS:
        if member not in record:
            raise SampleFormatError(f"{key}: missing member {member}")
        try:
            arrays[_array_name(member)] = _npy_view(record[member])
        except (ValueError, OSError, EOFError) as exn:
            raise SampleFormatError(f"{key}: member {member} is not a valid .npy ({exn})") from exn
    sample = Sample(meta=meta, key=key, **arrays)
    validate_sample(sample)
    return sample
