"""Stop signals: SIGTERM / SIGUSR1 / SIGINT become a collective stop + checkpoint, promptly.

* At a step boundary the loop reads ``requested`` (all ranks agree on it) and saves a checkpoint.
* While the loop waits for data (``interruptible()``), a signal raises :class:`StopRequested` at once,
  even inside a blocking read, so a data stall cannot keep the run alive.
* A second signal raises :class:`StopNow` wherever the process is (checkpoint saves are atomic).
* ``grace_s`` after the first signal, a process still running exits with code 75 regardless.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

EXIT_PREEMPTED = 75


class StopRequested(Exception):
    """A stop signal arrived while the loop was waiting for data (between steps)."""


class StopNow(BaseException):
    """A second stop signal: leave now, wherever the process is."""


class PreemptionWatcher:
    """Records that a stop signal arrived; ranks agree on it at the next step boundary."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self, *, grace_s: float = 0.0) -> None:
        self.requested = False
        self.signal_name = ""
        self.grace_s = grace_s
        self._waiting = False
        self._timer: threading.Timer | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            raise StopNow(f"second stop signal ({name})")
        self.requested, self.signal_name = True, name
        if self.grace_s > 0:
            self._timer = threading.Timer(self.grace_s, self._expire)
            self._timer.daemon = True
            self._timer.start()
        if self._waiting:
            raise StopRequested(f"{name} while waiting for data")

    def _expire(self) -> None:
        print(f"error: no clean stop within {self.grace_s:g} s of {self.signal_name} (loop.stop_grace_s); exiting "
              f"with {EXIT_PREEMPTED}, the last complete checkpoint stands", file=sys.stderr, flush=True)
        os._exit(EXIT_PREEMPTED)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A region (a wait for data) that a stop signal ends at once with :class:`StopRequested`."""
        if self.requested:
            raise StopRequested(f"{self.signal_name} before waiting for data")
        self._waiting = True
        try:
            yield
        finally:
            self._waiting = False

    def install(self) -> "PreemptionWatcher":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
