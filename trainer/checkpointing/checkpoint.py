"""Atomic, rotated checkpoints with a pointer file, and the train state saved beside the engine.

Layout of one stage's checkpoint folder::

    checkpoints/
      step_000120/          engine state (Accelerate/DeepSpeed) + train_state.json
      step_000160/
      latest.json           {"latest": "step_000160", "history": ["step_000120", "step_000160"]}

A save writes into ``.tmp-<name>`` and renames it when every rank is done; ``latest.json`` changes
last (``os.replace``), so a process killed mid-save leaves the previous checkpoint complete and
still pointed to. Resuming reads ``latest.json``; folder names are never parsed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

POINTER = "latest.json"
TRAIN_STATE = "train_state.json"


@dataclass(kw_only=True)
class TrainState:
    """Everything beyond the engine needed to continue a stage exactly."""

    step: int = 0
    """Optimizer steps taken."""
    epoch: int = 0
    """Data epoch in progress."""
    batches_in_epoch: int = 0
    """Micro-batches consumed in the current epoch (the data position)."""
    samples_seen: int = 0
    """Samples consumed on this rank."""
    nonfinite_skips: int = 0
    """Steps skipped because a loss was NaN/inf on some rank."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON-able state of stateful helpers (e.g. balancer statistics)."""

    @classmethod
    def from_json(cls, path: Path) -> "TrainState":
        return cls(**json.loads(path.read_text()))


def read_pointer(ckpt_dir: Path) -> dict[str, Any] | None:
    """The pointer file's content, or None when there is no checkpoint yet."""
    path = ckpt_dir / POINTER
    if not path.exists():
        return None
    return json.loads(path.read_text())


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint folder named by the pointer, or None."""
    pointer = read_pointer(ckpt_dir)
    if pointer is None:
        return None
    path = ckpt_dir / pointer["latest"]
    if not (path / TRAIN_STATE).exists():
        raise FileNotFoundError(f"{ckpt_dir / POINTER} names {path}, which is missing or incomplete")
    return path


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def save_checkpoint(
    ckpt_dir: Path,
    name: str,
    state: TrainState,
    *,
    save_engine: Callable[[Path], None],
    is_main: bool,
    barrier: Callable[[], None],
    keep_last: int,
) -> Path:
    """Save one checkpoint atomically on every rank; returns its final path.

    ``save_engine(tmp_dir)`` is called on every rank (DeepSpeed writes per-rank shards). Only the
    main process renames, moves the pointer and deletes rotated checkpoints.
    """
    tmp = ckpt_dir / f".tmp-{name}"
    final = ckpt_dir / name
    if is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    save_engine(tmp)
    barrier()
    if is_main:
        (tmp / TRAIN_STATE).write_text(json.dumps(asdict(state), indent=1))
        if final.exists():  # re-saving the same step (e.g. preempted right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = read_pointer(ckpt_dir) or {"history": []}
        history = [n for n in pointer["history"] if n != name] + [name]
        keep, drop = history[-keep_last:], history[:-keep_last]
        _write_json_atomic(ckpt_dir / POINTER, {"latest": name, "history": keep})
        for old in drop:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    barrier()
    return final
