"""Delayed frames: the optional members of a sample record that make latency of a few raw frames possible.

A sample stores each agent's history at ``history_stride`` raw frames (2 Hz from 10 Hz). A collaborator whose
message is ``d`` raw frames late (100 ms each at 10 Hz) shows the ego its window ending at raw frame ``t - d``,
frames that the history does not hold unless ``d`` is a multiple of the stride. A converter run with
``--delay-frames L`` therefore also stores, for every collaborator and every delay ``d = 1..L``, its window
delayed by ``d``: history step k at raw frame ``t - d - (T-1-k) * history_stride``. Two members of the sample
record carry it (docs/DATA_FORMAT.md):

- ``delayed_frames.json``: ``[L][A][T]`` frame keys (``null`` where that frame does not exist; row 0, the ego,
  is all ``null``), naming frame records of the shard like ``frames.json`` does;
- ``delayed_poses.npy``: float64 ``[L, A, T, 6]`` the poses of those frames (NaN where the key is ``null``).

Shards without them are read as before; only a latency that needs them asks for them
(``trainer.data.latency``). The frames are ordinary frame records, stored once per shard however many samples
or delays name them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from trainer.data.npy import npy_bytes, npy_view
from trainer.data.sample import FRAMES_KEY, SampleFormatError, frame_grid_problem

DELAYED_LIST_MEMBER = "delayed_frames.json"
"""Sample record member: the ``[L][A][T]`` keys of the delayed frames."""
DELAYED_POSES_MEMBER = "delayed_poses.npy"
"""Sample record member: float64 ``[L, A, T, 6]`` poses of the delayed frames."""


@dataclass(kw_only=True)
class DelayedFrames:
    """Every agent's history window delayed by 1..L raw frames (level ``d - 1`` = delay ``d``)."""

    keys: list[list[list[str | None]]]
    """[L][A][T] frame key of each delayed agent-frame, None where it does not exist (always for agent 0)."""
    poses: np.ndarray
    """[L, A, T, 6] float64 OpenCOOD poses of those frames, NaN where the key is None."""
    clouds: Mapping[str, np.ndarray]
    """Frame key -> its points [n, 4] float32 (sensor frame), for every key named in ``keys``."""

    @property
    def max_delay(self) -> int:
        """L: the largest delay (raw frames) stored."""
        return len(self.keys)

    def valid(self) -> np.ndarray:
        """[L, A, T] bool: the frame exists."""
        return np.array([[[k is not None for k in row] for row in level] for level in self.keys], dtype=bool)

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        """(key, points) of every distinct frame named, in first-mention order (what a writer stores)."""
        seen: set[str] = set()
        for level in self.keys:
            for row in level:
                for key in row:
                    if key is not None and key not in seen:
                        seen.add(key)
                        yield key, self.clouds[key]


def encode_delayed(delayed: DelayedFrames) -> dict[str, bytes]:
    """The two sample-record members of ``delayed`` (its frames are written as frame records)."""
    return {DELAYED_LIST_MEMBER: json.dumps(delayed.keys).encode("utf-8"),
            DELAYED_POSES_MEMBER: npy_bytes(np.ascontiguousarray(delayed.poses, dtype=np.float64))}


def delayed_keys_of(record: Mapping) -> list[str]:
    """The frame keys a sample record's ``delayed_frames.json`` names (none when absent or malformed: the
    reader only attaches frames; ``decode_delayed`` reports a malformed member)."""
    try:
        levels = json.loads(record[DELAYED_LIST_MEMBER])
        return [k for level in levels for row in level for k in row if isinstance(k, str)]
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        return []


def decode_delayed(record: Mapping, *, agents: int, history: int) -> DelayedFrames | None:
    """The delayed frames of a sample record with ``agents`` x ``history`` frames (its frames attached by the
    reader), or None when the record has none. ``SampleFormatError`` when they are malformed or a named frame
    is missing or unusable (a counted skip in the loader, like a bad frame of the history)."""
    key = str(record.get("__key__", "?"))
    if DELAYED_LIST_MEMBER not in record and DELAYED_POSES_MEMBER not in record:
        return None
    if DELAYED_LIST_MEMBER not in record or DELAYED_POSES_MEMBER not in record:
        raise SampleFormatError(f"{key}: {DELAYED_LIST_MEMBER} and {DELAYED_POSES_MEMBER} go together")
    try:
        levels = json.loads(record[DELAYED_LIST_MEMBER])
        poses = npy_view(record[DELAYED_POSES_MEMBER])
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exn:
        raise SampleFormatError(f"{key}: malformed delayed frames ({exn})") from exn
    if not isinstance(levels, list) or not levels:
        raise SampleFormatError(f"{key}: {DELAYED_LIST_MEMBER} must be a non-empty list of [A][T] grids")
    for level in levels:
        problem = frame_grid_problem(level)
        if problem is not None:
            raise SampleFormatError(f"{key}: {DELAYED_LIST_MEMBER} {problem}")
        if len(level) != agents or len(level[0]) != history:
            raise SampleFormatError(f"{key}: {DELAYED_LIST_MEMBER} grids must be [{agents}][{history}]")
        if any(k is not None for k in level[0]):
            raise SampleFormatError(f"{key}: {DELAYED_LIST_MEMBER} names frames of the ego (row 0), never late")
    shape = (len(levels), agents, history, 6)
    if poses.dtype != np.float64 or poses.shape != shape:
        raise SampleFormatError(f"{key}: {DELAYED_POSES_MEMBER} must be float64 {list(shape)}, got {poses.dtype} "
                                f"{list(poses.shape)}")
    delayed = DelayedFrames(keys=levels, poses=poses, clouds={})
    if not np.isfinite(poses[delayed.valid()]).all():
        raise SampleFormatError(f"{key}: {DELAYED_POSES_MEMBER} has a non-finite pose for a named frame")
    attached = record.get(FRAMES_KEY, {})
    clouds = {}
    for name in {k for level in levels for row in level for k in row if k is not None}:
        found = attached.get(name)
        if found is None:
            raise SampleFormatError(f"{key}: delayed frame {name} is not in its shard (before this sample)")
        if isinstance(found, str):
            raise SampleFormatError(f"{key}: unusable {found}")
        clouds[name] = found
    delayed.clouds = clouds
    return delayed
