"""The run directory: decided by rank 0, shared with every rank, never parsed for state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from trainer.config import RunConfig


class RunDirError(ValueError):
    """The requested run directory cannot be used as asked."""


def new_run_dir(cfg: RunConfig, *, clock: Callable[[], float] = time.time) -> Path:
    """``<output_root>/<name>-<UTC YYYYmmdd-HHMMSS>`` with a numeric suffix if it already exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock()))
    base = Path(cfg.output_root) / f"{cfg.name}-{stamp}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def decide_run_dir(cfg: RunConfig, *, is_main: bool, broadcast: Callable[[Any], Any]) -> Path:
    """Rank 0 picks (and creates) the run directory; every rank returns the same path."""
    choice: Any = None
    if is_main:
        try:
            path = Path(cfg.dir) if cfg.dir else new_run_dir(cfg)
            if cfg.dir and cfg.resume == "never" and path.exists() and any(path.iterdir()):
                raise RunDirError(f"run.dir {path} is not empty and run.resume=never")
            path.mkdir(parents=True, exist_ok=True)
            choice = str(path.resolve())
        except (OSError, RunDirError) as err:
            choice = err
    choice = broadcast(choice)
    if isinstance(choice, BaseException):
        raise RunDirError(str(choice))
    return Path(choice)
