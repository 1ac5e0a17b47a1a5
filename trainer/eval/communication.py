"""Communication cost over an evaluation: the bytes every collaborator of every sample sent to the ego.

``CommunicationLog`` keeps one ``MessageRecord`` per sample (what each agent slot sent) on each rank; ``compute``
gathers them once (a collective with ``gather``; repeated samples count once, as in ``Evaluator``) and gives
the summary metrics (``comm/*``) and the per-sample records for the evaluation output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from models.batch import Batch
from trainer.data.sample import AGENT_TYPE_NAMES
from trainer.eval.evaluator import Gather, unique_by_key

PREFIX = "comm/"


@dataclass(frozen=True)
class MessageRecord:
    """The messages the ego of one sample received."""

    key: str
    """Sample key."""
    bytes: tuple[int, ...]
    """Bytes sent by each collaborator, in agent-slot order (slots 1, 2, ... that hold a real agent)."""
    agent_types: tuple[int, ...]
    """Type of each of those collaborators (index into ``AGENT_TYPE_NAMES``)."""

    def as_json(self) -> dict:
        return {"key": self.key, "bytes": list(self.bytes),
                "agent_types": [AGENT_TYPE_NAMES[t] for t in self.agent_types]}


def summarize_messages(records: list[MessageRecord]) -> dict[str, float]:
    """``comm/messages`` (collaborator messages), ``comm/bytes_mean``, ``comm/bytes_p50``, ``comm/bytes_p90``,
    ``comm/bytes_max`` over messages, ``comm/bytes_mean/<agent type>`` per type that sent, and
    ``comm/bytes_per_sample``: what the ego received per sample, on average over all samples (NaN without any)."""
    sizes = np.array([b for r in records for b in r.bytes], dtype=np.float64)
    types = np.array([t for r in records for t in r.agent_types], dtype=np.int64)
    nan = float("nan")
    metrics = {f"{PREFIX}messages": float(sizes.size),
               f"{PREFIX}bytes_per_sample": float(np.mean([sum(r.bytes) for r in records])) if records else nan}
    for name, value in (("mean", np.mean), ("p50", np.median), ("p90", lambda x: np.percentile(x, 90)),
                        ("max", np.max)):
        metrics[f"{PREFIX}bytes_{name}"] = float(value(sizes)) if sizes.size else nan
    for index, name in enumerate(AGENT_TYPE_NAMES):
        if (types == index).any():
            metrics[f"{PREFIX}bytes_mean/{name}"] = float(sizes[types == index].mean())
    return metrics


class CommunicationLog:
    """Message sizes of an evaluation on one or many ranks (every rank calls ``update``, then ``compute``)."""

    def __init__(self, *, gather: Gather | None = None) -> None:
        self.gather = gather
        self._records: list[MessageRecord] = []

    def update(self, batch: Batch, message_bytes: Tensor) -> None:
        """Record one batch: ``message_bytes`` [B, A] int64 bytes each agent slot sent (``CooperativePrediction``)."""
        if tuple(message_bytes.shape) != tuple(batch.agent_mask.shape):
            raise ValueError(f"message_bytes {tuple(message_bytes.shape)} must be [B, A] = "
                             f"{tuple(batch.agent_mask.shape)}")
        mask, types, sizes = batch.agent_mask.cpu(), batch.agent_types.cpu(), message_bytes.cpu()
        for scene, key in enumerate(batch.keys):
            slots = [a for a in range(1, mask.shape[1]) if mask[scene, a]]
            self._records.append(MessageRecord(key=key, bytes=tuple(int(sizes[scene, a]) for a in slots),
                                               agent_types=tuple(int(types[scene, a]) for a in slots)))

    def records(self) -> list[MessageRecord]:
        """All ranks' records, one per sample, sorted by key (collective with ``gather``)."""
        if self.gather is None:
            return unique_by_key(self._records)
        return unique_by_key([r for rank_records in self.gather(self._records) for r in rank_records])

    def compute(self) -> tuple[dict[str, float], list[MessageRecord]]:
        """(summary metrics, the per-sample records) over all ranks (collective with ``gather``)."""
        records = self.records()
        return summarize_messages(records), records
