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
    crash_at_step: int = -1
    """After this optimizer step, rank ``crash_rank`` exits abruptly (once per run dir); -1 = never."""
    crash_rank: int = 0
    """Rank that crashes."""

    def __post_init__(self) -> None:
        if any(s < 0 for s in self.nan_steps) or self.nan_rank < 0 or self.crash_rank < 0:
            raise ValueError("faults.nan_steps, faults.nan_rank and faults.crash_rank must be >= 0")
        if self.crash_at_step < -1:
            raise ValueError("faults.crash_at_step must be >= -1")


class FaultInjector:
    """Applies a ``FaultConfig``; the crash marker in the run directory makes a crash happen once."""

    def __init__(self, cfg: FaultConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.marker = run_dir / ".fault-crashed"

    def maybe_corrupt_loss(self, loss: torch.Tensor, *, step: int, rank: int) -> torch.Tensor:
        if rank == self.cfg.nan_rank and step in self.cfg.nan_steps:
            return loss * float("nan")
        return loss

    def maybe_crash(self, *, step: int, rank: int) -> None:
        if step == self.cfg.crash_at_step and rank == self.cfg.crash_rank and not self.marker.exists():
            self.marker.write_text(f"crashed after step {step} on rank {rank}\n")
            print(f"[faults] rank {rank} crashing after step {step}", flush=True)
            os._exit(17)
