"""Data-stall detection: an alarm (SIGALRM) armed while the loop waits for a training batch.

A real signal interrupts a blocking read (a hung file system, a FIFO with no writer) as well as the
DataLoader's queue wait, so the alarm fires however the loader is stuck. At a quarter of the timeout it
prints a warning; at the timeout it raises :class:`DataStallError`. Main thread only.
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from types import FrameType
from typing import Callable, Iterator


class DataStallError(RuntimeError):
    """No training batch arrived within ``loop.stall_timeout_s``."""


class StallAlarm:
    """``with alarm.waiting(): batch = next(stream)`` raises :class:`DataStallError` after ``timeout_s``."""

    def __init__(self, *, timeout_s: float, what: str,
                 warn: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)) -> None:
        self.timeout_s = timeout_s
        self.what = what
        self.warn = warn
        self._start = 0.0
        self._warned = False

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        waited = time.monotonic() - self._start
        if not self._warned:
            self._warned = True
            self.warn(f"warning: no training batch for {waited:.0f} s: the data loader may be stalled ({self.what}); "
                      f"stopping at {self.timeout_s:g} s (loop.stall_timeout_s)")
            signal.setitimer(signal.ITIMER_REAL, max(self.timeout_s - waited, 1e-3))
            return
        raise DataStallError(f"no training batch for {waited:.0f} s (loop.stall_timeout_s={self.timeout_s:g}): the "
                             f"data loader is stalled reading {self.what}")

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Arm the alarm for one wait (no-op when ``timeout_s`` is 0)."""
        if self.timeout_s <= 0:
            yield
            return
        self._start, self._warned = time.monotonic(), False
        previous = signal.signal(signal.SIGALRM, self._fire)
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s / 4)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
