"""The run directory: decided by rank 0, shared with every rank, never parsed for state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import yaml

from trainer.config import RunConfig

CONFIG_FILE = "config.yaml"
"""The resolved config a run directory holds (written at every start)."""
IGNORED_ON_RESUME = ("run.allow_config_change",)
"""Keys that may change between the starts of one run without counting as a change."""


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
        path = Path(cfg.dir) if cfg.dir else Path(cfg.output_root)
        try:
            path = Path(cfg.dir) if cfg.dir else new_run_dir(cfg)
            if cfg.dir and cfg.resume == "never" and path.exists() and any(path.iterdir()):
                raise RunDirError(f"run.dir {path} is not empty and run.resume=never")
            path.mkdir(parents=True, exist_ok=True)
            choice = str(path.resolve())
        except RunDirError as err:
            choice = err
        except OSError as err:
            choice = RunDirError(f"cannot create the run directory {path} ({err.strerror or err}); choose a "
                                 f"writable {'run.dir' if cfg.dir else 'run.output_root'}")
    choice = broadcast(choice)
    if isinstance(choice, BaseException):
        raise RunDirError(str(choice))
    return Path(choice)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(saved_yaml: str, current_yaml: str) -> list[str]:
    """``key: saved -> current`` for every leaf that differs (added and removed keys included)."""
    saved, current = _flatten(yaml.safe_load(saved_yaml) or {}), _flatten(yaml.safe_load(current_yaml) or {})
    missing = object()
    lines = []
    for key in sorted(set(saved) | set(current)):
        if key in IGNORED_ON_RESUME:
            continue
        old, new = saved.get(key, missing), current.get(key, missing)
        if old != new:
            shown = ["(absent)" if value is missing else repr(value) for value in (old, new)]
            lines.append(f"{key}: {shown[0]} -> {shown[1]}")
    return lines


def resumed_config_changes(run_dir: Path, current_yaml: str) -> list[str]:
    """How ``current_yaml`` differs from the config the run directory was started with (none for a new run)."""
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        return []
    try:
        return config_changes(saved.read_text(), current_yaml)
    except yaml.YAMLError as err:
        raise RunDirError(f"{saved} is not readable YAML ({err}); move it away to start the run afresh") from err
