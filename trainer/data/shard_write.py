"""Samples -> WebDataset tar shards of schema v2 (docs/DATA_FORMAT.md), every agent-frame once per shard.

A sample's points are not stored in its record: each agent-frame it uses is written once per shard
as a frame record (key ``frame_key(...)``, member ``frame.npy``), just before the first sample of
that shard that uses it; a frame needed again in a later shard is written there again, so every
shard can be read on its own.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import webdataset as wds

from trainer.data.delayed_frames import DelayedFrames, encode_delayed
from trainer.data.sample import Sample, encode_frame, encode_sample, sample_frames

SHARD_MTIME = 0
"""Modification time (Unix seconds) written for every tar member."""


class FrameClashError(ValueError):
    """Two different point clouds were given the same frame key (e.g. scenario names that differ only
    in characters outside ``[A-Za-z0-9_-]``): storing both under one key would lose one of them."""


def temp_name(path: str | Path) -> Path:
    """Where shard ``path`` is written until it is complete: ``.<name>.partial`` in the same folder
    (hidden, and matched by no ``*.tar`` glob or shard brace pattern)."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def _digest(points: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(points).data, digest_size=16).digest()


class ShardSink:
    """Writes samples into shards ``pattern % 0, pattern % 1, ...`` of at most ``maxcount`` samples each.

    Frame records do not count towards ``maxcount``. A shard is created by its first sample (no
    sample, no file). Members are plain ustar with ``mtime`` 0: writing the same samples twice gives
    byte-identical shards.

    Every shard is written under a temporary name (``temp_name``, a hidden ``*.partial`` file next to
    it) and all of them get their final names in ``close``. Leaving a ``with`` block by an exception
    (or calling ``abort``) deletes them instead: a failed conversion leaves no shard and no temp file
    (shards of an earlier conversion under the same names are left as they were).
    """

    def __init__(self, pattern: str, *, maxcount: int) -> None:
        if "%" not in pattern:
            raise ValueError(f"out pattern {pattern!r} needs a %d-style shard index, e.g. 'train-%06d.tar'")
        if maxcount < 1:
            raise ValueError(f"maxcount must be >= 1, got {maxcount}")
        self.pattern, self.maxcount = pattern, maxcount
        self.shards: list[str] = []
        """Final names of the shards written (or being written); they exist once ``close`` returns."""
        self.samples = 0
        """Sample records written."""
        self.frames = 0
        """Frame records written (a frame used in k shards counts k times)."""
        self._tar: wds.TarWriter | None = None
        self._committed = 0  # shards[:_committed] have their final names
        self._in_shard = 0
        self._shard_frames: set[str] = set()
        self._digests: dict[str, bytes] = {}  # every frame key seen -> digest of its points

    def _next_shard(self) -> None:
        self._finish_tar()
        path = self.pattern % len(self.shards)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.shards.append(path)
        # a fixed integer mtime: plain ustar members (tarfile adds a PAX header to every member whose
        # mtime is a float, webdataset's default time.time()) and byte-reproducible shards
        self._tar = wds.TarWriter(str(temp_name(path)), mtime=SHARD_MTIME)
        self._in_shard = 0
        self._shard_frames = set()

    def write(self, sample: Sample, delayed: DelayedFrames | None = None) -> None:
        """Write ``sample`` (validated first), preceded by those of its frames this shard lacks; ``delayed``
        (its collaborators' delayed windows, ``trainer.data.delayed_frames``) adds its members and frames.

        Raises ``SampleFormatError`` for an invalid sample and ``FrameClashError`` when a frame key
        arrives with points other than those written under it before."""
        record = encode_sample(sample)
        frames = list(sample_frames(sample))
        if delayed is not None:
            record.update(encode_delayed(delayed))
            frames += list(delayed.frames())
        for key, points in frames:
            digest = _digest(points)
            if self._digests.setdefault(key, digest) != digest:
                raise FrameClashError(f"{sample.key}: frame {key} has other points than the frame of that key "
                                      "written before (scenario names that clash once sanitised?)")
        if self._tar is None or self._in_shard >= self.maxcount:
            self._next_shard()
        assert self._tar is not None
        for key, points in frames:
            if key not in self._shard_frames:
                self._tar.write(encode_frame(key, points))
                self._shard_frames.add(key)
                self.frames += 1
        self._tar.write(record)
        self._in_shard += 1
        self.samples += 1

    def _finish_tar(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def close(self) -> None:
        """Finish the current shard and give every shard written so far its final name (the sink can go
        on writing into a new one)."""
        self._finish_tar()
        for path in self.shards[self._committed:]:
            os.replace(temp_name(path), path)
        self._committed = len(self.shards)

    def abort(self) -> None:
        """Delete the shards not yet given their final names (``close`` commits the others)."""
        try:
            self._finish_tar()
        finally:
            for path in self.shards[self._committed:]:
                temp_name(path).unlink(missing_ok=True)
            del self.shards[self._committed:]

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
