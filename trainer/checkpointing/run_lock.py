"""The run-directory lock: one run at a time per run directory.

Rank 0 creates ``<run dir>/run.lock`` with ``O_CREAT | O_EXCL`` before anything else is written
there; it holds JSON naming the holder (host, pid, start time) and is removed on every exit path
that runs Python's ``finally`` blocks (done, error, divergence, preemption). A lock left behind by a
killed run is *stale* when it names this host and a process id that is not running (or this very
process): it is taken over with a message. A lock of another host cannot be checked from here and
counts as held; its error says how to remove it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer.checkpointing.run_dir import RunDirError

LOCK_FILE = "run.lock"
"""Name of the lock file inside the run directory."""


class RunLockError(RunDirError):
    """The run directory is locked by another run (or the lock cannot be written)."""


@dataclass(frozen=True, kw_only=True)
class LockOwner:
    """Who holds a run directory: the JSON content of its lock file."""

    host: str
    """Host name of the holding process (``socket.gethostname()``)."""
    pid: int
    """Process id of the holder (rank 0 of its run) on ``host``."""
    started: str
    """When the holder took the lock, UTC, ISO 8601."""

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}"


def current_owner(*, clock: Callable[[], float] = time.time) -> LockOwner:
    """The owner record of this process, now."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))
    return LockOwner(host=socket.gethostname(), pid=os.getpid(), started=started)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_owner(path: Path) -> LockOwner | None:
    """The owner recorded in lock file ``path``; None if it is absent, empty or not a lock record."""
    try:
        data = json.loads(Path(path).read_text())
        return LockOwner(host=str(data["host"]), pid=int(data["pid"]), started=str(data["started"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def is_stale(holder: LockOwner, me: LockOwner) -> bool:
    """A lock is stale when it names this host and a pid that is not running, or this very process
    (a process cannot be holding a lock of another run under its own pid)."""
    return holder.host == me.host and (holder.pid == me.pid or not pid_alive(holder.pid))


@dataclass(kw_only=True)
class RunLock:
    """A held lock; ``release`` removes the file if it is still this owner's."""

    path: Path
    """The lock file."""
    owner: LockOwner
    """This process's record in it."""

    def release(self) -> None:
        if read_owner(self.path) == self.owner:
            self.path.unlink(missing_ok=True)


def _create(path: Path, owner: LockOwner) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, (json.dumps(asdict(owner)) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(path: Path, stale: LockOwner) -> None:
    """Move the stale lock aside (only one of several starting runs can) and delete it; if what was
    moved is not the stale record (another run took the lock meanwhile), put it back."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if read_owner(aside) != stale:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


def _read_holder(path: Path) -> LockOwner | None:
    """The holder of an existing lock; a lock just created by another run may not hold its JSON yet."""
    for _ in range(10):
        holder = read_owner(path)
        if holder is not None or not path.exists():
            return holder
        time.sleep(0.05)
    return None


def acquire_run_lock(run_dir: Path, *, owner: LockOwner | None = None,
                     log: Callable[[str], None] = print) -> RunLock:
    """Take the lock of ``run_dir`` (taking over a stale one, with a message) or raise ``RunLockError``."""
    me = owner or current_owner()
    path = Path(run_dir) / LOCK_FILE
    for _ in range(5):
        try:
            _create(path, me)
            return RunLock(path=path, owner=me)
        except FileExistsError:
            pass
        except OSError as err:
            raise RunLockError(f"run directory {run_dir} is not writable ({err.strerror or err}: {path}); "
                               "choose a writable run.dir or run.output_root") from err
        holder = _read_holder(path)
        if holder is None:
            if not path.exists():
                continue
            raise RunLockError(f"run directory {run_dir} has an unreadable lock file {path}; if no run uses "
                               f"this directory, delete it (rm {path}) and start again")
        if not is_stale(holder, me):
            raise RunLockError(_held_message(run_dir, path, holder, me))
        log(f"taking over the stale lock {path} of a run that is no longer running ({holder.describe()})")
        _remove_stale(path, holder)
    raise RunLockError(f"could not take the lock {path}: other runs keep taking it")


def _held_message(run_dir: Path, path: Path, holder: LockOwner, me: LockOwner) -> str:
    text = f"run directory {run_dir} is in use by another run ({holder.describe()}; lock {path}). "
    if holder.host != me.host:
        return text + (f"It was taken on another host, which cannot be checked from {me.host}: if that run "
                       f"is no longer running, delete the lock (rm {path}) and start again; otherwise use "
                       "another run.dir.")
    return text + "Wait for it to finish or use another run.dir."


@contextmanager
def hold_run_lock(run_dir: Path, *, is_main: bool, broadcast: Callable[[Any], Any],
                  log: Callable[[str], None] = print) -> Iterator[RunLock | None]:
    """Rank 0 holds the lock of ``run_dir`` for the ``with`` block; every rank raises ``RunLockError``
    (through ``broadcast``, rank 0's value on every rank) when it cannot be taken, so no rank waits."""
    lock: RunLock | None = None
    try:
        error: str | None = None
        unexpected: Exception | None = None
        if is_main:
            try:
                lock = acquire_run_lock(run_dir, log=log)
            except RunDirError as err:
                error = str(err)
            except Exception as err:  # noqa: BLE001 - told to every rank first, then re-raised on rank 0
                error, unexpected = f"rank 0 failed to lock {run_dir}: {type(err).__name__}: {err}", err
        error = broadcast(error)
        if unexpected is not None:
            raise unexpected
        if error is not None:
            raise RunLockError(error)
        yield lock
    finally:
        if lock is not None:
            lock.release()
