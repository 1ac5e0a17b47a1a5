"""Atomic, rotated checkpoints with a pointer file, and the train state saved beside the engine.

Layout of one stage's checkpoint folder::

    checkpoints/
      step_000120/          engine state (Accelerate/DeepSpeed) + train_state.json + manifest.json
      step_000160/
      latest.json           {"latest": "step_000160", "history": ["step_000120", "step_000160"]}

A save writes into ``.tmp-<name>`` and renames it when every rank is done; ``latest.json`` changes
last (``os.replace``), so a process killed mid-save leaves the previous checkpoint complete and
still pointed to. Resuming reads ``latest.json``; folder names are never parsed. Before a resume uses a
checkpoint, :func:`verify_checkpoint` checks it (the manifest's file sizes, the CRCs of every zip-format
``torch.save`` file, the JSON files); a corrupt one is reported and the previous one in the pointer's
history is tried (:func:`resumable_checkpoint`).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

POINTER = "latest.json"
TRAIN_STATE = "train_state.json"
MANIFEST = "manifest.json"
"""Every file of a checkpoint with its size in bytes, written after the engine state and before the rename."""


class CorruptCheckpointError(ValueError):
    """No complete checkpoint is left to resume from (each one found is named with its reason)."""


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


def verify_checkpoint(path: Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from, or None when it is complete.

    Reads every file once (CRC of each zip member), so it costs about one read of the checkpoint.
    """
    try:
        TrainState.from_json(path / TRAIN_STATE)
    except FileNotFoundError:
        return f"{TRAIN_STATE} is missing"
    except (ValueError, TypeError) as err:
        return f"{TRAIN_STATE} is unreadable ({type(err).__name__}: {err})"
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError, TypeError) as err:
            return f"{MANIFEST} is unreadable ({type(err).__name__}: {err})"
        for name, size in files.items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            if file.stat().st_size != size:
                return f"{name} has {file.stat().st_size} bytes, {size} were saved"
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        name = file.relative_to(path)
        if file.suffix == ".json":
            try:
                json.loads(file.read_text())
            except ValueError as err:
                return f"{name} is not valid JSON ({err})"
        elif zipfile.is_zipfile(file):  # torch.save's format: its members carry CRCs
            try:
                with zipfile.ZipFile(file) as archive:
                    bad = archive.testzip()
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                return f"{name} is a damaged archive ({err})"
            if bad is not None:
                return f"{name} is damaged (member {bad} fails its CRC)"
        elif _zip_magic(file):  # a zip's start without its end: cut short
            return f"{name} is a truncated archive"
    return None


def _zip_magic(file: Path) -> bool:
    with file.open("rb") as f:
        return f.read(4) == b"PK\x03\x04"


def resumable_checkpoint(ckpt_dir: Path, *, log: Callable[[str], None] = print) -> Path | None:
    """The newest checkpoint of the pointer's history that :func:`verify_checkpoint` accepts, or None when
    the stage has none. Each corrupt one is reported through ``log`` with its path and reason; when none
    is left, :class:`CorruptCheckpointError` (the data is left in place for the user to inspect)."""
    try:
        pointer = read_pointer(ckpt_dir)
    except ValueError as err:
        raise CorruptCheckpointError(f"{ckpt_dir / POINTER} is unreadable ({err}); move {ckpt_dir} away to "
                                     "start the stage afresh") from err
    if pointer is None:
        return None
    names = [pointer["latest"]] + [n for n in reversed(pointer.get("history", [])) if n != pointer["latest"]]
    reasons = []
    for name in names:
        path = ckpt_dir / name
        reason = verify_checkpoint(path) if path.is_dir() else "the folder is missing"
        if reason is None:
            return path
        reasons.append(f"{path}: {reason}")
        log(f"checkpoint {path} is corrupt ({reason}); trying the previous one")
    raise CorruptCheckpointError("no complete checkpoint left to resume from:\n  " + "\n  ".join(reasons)
                                 + f"\nmove {ckpt_dir} away to start the stage afresh")


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
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
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
