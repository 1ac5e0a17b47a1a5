"""An endless stream of training batches over epochs that knows its position (for exact resume)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Iterable

from models.batch import Batch


class BatchStream:
    """Yields batches epoch after epoch; ``position`` is (epoch, batches consumed in that epoch).

    ``make_epoch(epoch)`` returns that epoch's iterable (the loader reseeds shuffling and
    augmentation per epoch). Resuming at (epoch, k) rebuilds epoch ``epoch`` and skips k batches,
    so the resumed run sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, make_epoch: Callable[[int], Iterable[Batch]], *, epoch: int = 0, skip: int = 0) -> None:
        self.make_epoch = make_epoch
        self.epoch = epoch
        self.in_epoch = 0
        self._skip = skip
        self._it: Iterator[Batch] | None = None

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, batches consumed in it). A stop while a resume is still skipping owes the whole skip."""
        return self.epoch, max(self.in_epoch, self._skip)

    def _start(self) -> None:
        self._it = iter(self.make_epoch(self.epoch))
        self.in_epoch = 0
        for _ in range(self._skip):
            next(self._it)
            self.in_epoch += 1
        self._skip = 0

    def __next__(self) -> Batch:
        for _ in range(2):
            if self._it is None:
                self._start()
            try:
                batch = next(self._it)  # type: ignore[arg-type]
            except StopIteration:
                self._it = None
                self.epoch += 1
                continue
            self.in_epoch += 1
            return batch
        raise RuntimeError(f"epoch {self.epoch} of the training data is empty")

    def __iter__(self) -> "BatchStream":
        return self
