"""Accumulates per-batch detections on each rank and computes split-level metrics once at the end."""

from __future__ import annotations

from typing import Callable

from models.batch import Batch
from models.detections import SceneDetections
from trainer.eval.config import EvalConfig
from trainer.eval.records import FrameRecord, make_frame_record
from trainer.eval.summary import summarize_records

Gather = Callable[[object], list[object]]
"""Collective that returns every rank's object, in rank order (e.g. ``trainer.runtime.process_group.gather_objects``)."""


def unique_by_key(records: list[FrameRecord]) -> list[FrameRecord]:
    """Drop repeated samples (first occurrence wins) and sort by key, so the result is rank-layout free."""
    first: dict[str, FrameRecord] = {}
    for record in records:
        first.setdefault(record.key, record)
    return [first[key] for key in sorted(first)]


class Evaluator:
    """Detection AP + prediction metrics over an evaluation split, on one or many ranks.

    Every rank calls :meth:`update` on its own batches, then every rank calls :meth:`compute` (a
    collective when ``gather`` is given: it gathers the compact records once, so uneven per-rank
    batch counts cannot hang). Samples seen more than once (padding for equal batch counts) count once.
    """

    def __init__(self, config: EvalConfig, *, gather: Gather | None = None) -> None:
        self.config = config
        self.gather = gather
        self._records: list[FrameRecord] = []

    def reset(self) -> None:
        self._records = []

    @property
    def local_records(self) -> list[FrameRecord]:
        """This rank's records so far, in update order (duplicates included); what ``gather`` receives."""
        return list(self._records)

    @property
    def num_local_frames(self) -> int:
        """Frames recorded on this rank so far (duplicates included)."""
        return len(self._records)

    def update(self, detections: list[SceneDetections], batch: Batch) -> None:
        """Record one batch: ``detections[b]`` are the decoded outputs for scene b of ``batch``."""
        if len(detections) != batch.num_scenes or len(batch.keys) != batch.num_scenes:
            raise ValueError(f"need one SceneDetections and one key per scene: got {len(detections)} detections,"
                             f" {len(batch.keys)} keys for {batch.num_scenes} scenes")
        for scene, det in enumerate(detections):
            self._records.append(make_frame_record(det, batch, scene, self.config))

    def gathered_records(self) -> list[FrameRecord]:
        """All ranks' records, de-duplicated by key and sorted by key (collective with ``gather``)."""
        if self.gather is None:
            return unique_by_key(self._records)
        per_rank = self.gather(self._records)
        if not isinstance(per_rank, list):
            raise TypeError(f"gather must return a list with one entry per rank, got {type(per_rank).__name__}")
        return unique_by_key([record for rank_records in per_rank for record in rank_records])

    def compute(self) -> dict[str, float]:
        """The flat metrics dict of :func:`trainer.eval.summary.summarize_records` over all ranks."""
        return summarize_records(self.gathered_records(), self.config)
