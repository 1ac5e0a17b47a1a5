"""Deliberate faults for resilience tests and drills (all off by default)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(kw_only=True)
class FaultConfig:
    """Fault injection, for testing that training survives bad steps and crashed workers."""

    nan_steps: list[int] = field(default_factory=list)
    """Optimizer steps (0-based) at which rank ``nan_rank`` replaces its loss by NaN."""
    nan_rank: int = 0
    """Rank that produces the NaN losses."""
    nan_repeats: int = 1
    """Attempts at each step in ``nan_steps`` that get a NaN (a skipped step is retried at the same step;
    1 = one bad batch, recovered from; >= loop.max_nonfinite_in_row = a diverging run)."""
    crash_at_step: int = -1
    """After this optimizer step, rank ``crash_rank`` exits abruptly (once per run dir); -1 = never."""
    crash_rank: int = 0
    """Rank that crashes."""
    stall_at_step: int = -1
    """Before this optimizer step, the training data of every rank stops arriving (once per run dir): the
    wait for the batch blocks in a read that never returns, of a FIFO with no writer, as on a hung file
    system. -1 = never."""

    def __post_init__(self) -> None:
        if self.nan_repeats < 1:
            raise ValueError(f"faults.nan_repeats must be >= 1, got {self.nan_repeats}")
        if any(s < 0 for s in self.nan_steps) or self.nan_rank < 0 or self.crash_rank < 0:
            raise ValueError("faults.nan_steps, faults.nan_rank and faults.crash_rank must be >= 0")
        if self.crash_at_step < -1 or self.stall_at_step < -1:
            raise ValueError("faults.crash_at_step and faults.stall_at_step must be >= -1")


class FaultInjector:
    """Applies a ``FaultConfig``; the crash marker in the run directory makes a crash happen once."""

    def __init__(self, cfg: FaultConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.marker = run_dir / ".fault-crashed"
        self.stall_fifo = run_dir / ".fault-stall"
        self._nan_given: dict[int, int] = {}

    def maybe_corrupt_loss(self, loss: torch.Tensor, *, step: int, rank: int) -> torch.Tensor:
        """NaN on rank ``nan_rank`` for the first ``nan_repeats`` losses computed at each step of ``nan_steps``."""
        if rank == self.cfg.nan_rank and step in self.cfg.nan_steps:
            given = self._nan_given.get(step, 0)
            if given < self.cfg.nan_repeats:
                self._nan_given[step] = given + 1
                return loss * float("nan")
        return loss

    def maybe_crash(self, *, step: int, rank: int) -> None:
        if step == self.cfg.crash_at_step and rank == self.cfg.crash_rank and not self.marker.exists():
            self.marker.write_text(f"crashed after step {step} on rank {rank}\n")
            print(f"[faults] rank {rank} crashing after step {step}", flush=True)
            os._exit(17)

    def maybe_stall(self, *, step: int) -> None:
        """Block forever in ``open`` of a FIFO nobody writes to (a signal or the stall alarm ends it)."""
        if step != self.cfg.stall_at_step:
            return
        try:
            os.mkfifo(self.stall_fifo)
        except FileExistsError:  # this run directory has had its stall (or another rank made the FIFO)
            if self.stall_fifo.with_suffix(".done").exists():
                return
        print(f"[faults] training data stalls before step {step}", flush=True)
        try:
            with open(self.stall_fifo, "rb"):
                pass
        finally:
            self.stall_fifo.with_suffix(".done").touch()
