"""Shard URLs -> sample records with their frames attached, ready for ``decode_sample``.

A shard of schema v2 holds frame records (one agent-frame's points, ``frame.npy``) and sample
records (``meta.json``, ``frames.json``, ...); see docs/DATA_FORMAT.md. Reading one shard, the
frames seen so far are kept in a ``FrameTable`` (a new one per shard read, so memory is bounded by
one shard's frames) and every sample record gets the frames it names, as they are when it is read
(``FRAMES_KEY``). Frame records are not samples: they are never yielded, counted or skipped.

Nothing here raises for bad data: a missing, malformed or clashing frame is recorded and
``decode_sample`` turns it into a ``SampleFormatError`` of each sample that uses it (a counted
skip in the loader); samples that do not use it are unaffected.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from webdataset.handlers import reraise_exception

from trainer.data.delayed_frames import delayed_keys_of
from trainer.data.sample import (
    FRAME_MEMBER,
    FRAMES_KEY,
    Sample,
    SampleFormatError,
    decode_frame,
    decode_sample,
    frame_keys_of,
)
from trainer.data.tar_read import Handler, shard_groups


def is_frame_record(record: dict) -> bool:
    """A frame record has ``frame.npy`` and no ``meta.json`` (anything else is read as a sample)."""
    return FRAME_MEMBER in record and "meta.json" not in record


class FrameTable:
    """The frame records of one shard read so far: key -> points [n, 4] float32 (a read-only view of
    the record's bytes), or the reason the frame is unusable."""

    def __init__(self) -> None:
        self._frames: dict[str, np.ndarray | str] = {}
        self._data: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, record: dict) -> None:
        """Take one frame record. The same key again with the same bytes changes nothing; with other
        bytes the key is unusable from then on (samples read earlier keep the first frame)."""
        key, data = record["__key__"], record[FRAME_MEMBER]
        if key in self._data:
            if self._data[key] != data:
                self._frames[key] = f"frame {key}: two frame records of this key with different content"
            return
        self._data[key] = data
        try:
            self._frames[key] = decode_frame(record)
        except SampleFormatError as exn:
            self._frames[key] = str(exn)

    def attach(self, record: dict) -> dict:
        """``record`` with ``FRAMES_KEY`` set to the known frames among those it names in ``frames.json`` and in
        ``delayed_frames.json`` (a malformed ``frames.json`` attaches nothing: ``decode_sample`` reports it)."""
        try:
            keys = [k for row in frame_keys_of(record) for k in row]
        except SampleFormatError:
            return record
        keys += delayed_keys_of(record)
        record[FRAMES_KEY] = {k: self._frames[k] for k in keys if k in self._frames}
        return record


def attach_frames(records: Iterable[dict]) -> Iterator[dict]:
    """The records of ONE shard -> its sample records, each with the frames it names attached."""
    table = FrameTable()
    for record in records:
        if is_frame_record(record):
            table.add(record)
        else:
            yield table.attach(record)


def sample_records(urls: Iterable[dict], handler: Handler) -> Iterator[dict]:
    """``{"url": ...}`` dicts -> the sample records of those shards, frames attached; what cannot be
    read goes to ``handler`` (as in ``tar_read.shard_records``)."""
    for records in shard_groups(urls, handler):
        yield from attach_frames(records)


def read_samples(urls: Iterable[str]) -> Iterator[Sample]:
    """Every sample of the shards ``urls``, decoded, in order; anything unreadable raises."""
    for record in sample_records(({"url": u} for u in urls), handler=reraise_exception):
        yield decode_sample(record)
