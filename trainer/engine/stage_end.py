"""When a stage with ``stages.<name>.until`` ends: a plateau of a validation metric, or its step cap.

:class:`PlateauRule` is pure (no I/O, no collectives): it is fed one metric value per plateau evaluation
and decides. Its state is a small JSON-able dict, saved in the checkpoint's train state so that a resumed
run continues the count where the checkpoint left it and takes the same decision as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from trainer.eval.config import EvalConfig
from trainer.eval.summary import ap_key

RECON_METRIC = "recon"
"""A pretraining stage's validation metric: the masked Chamfer L1 of its reconstruction on the validation split."""
LOWER_IS_BETTER = ("minADE", "minFDE", "MR", RECON_METRIC)
"""Metrics whose default ``mode`` is ``min``; every other metric (AP, EPA) defaults to ``max``."""
MODES = ("max", "min")


def default_mode(metric: str) -> str:
    """``min`` for a distance, a miss rate or a loss (``minADE``, ``minFDE``, ``MR``, ``recon``), else ``max``."""
    return "min" if metric in LOWER_IS_BETTER else "max"


def plateau_metrics(config: EvalConfig) -> list[str]:
    """Names of the evaluator's quality metrics a plateau can watch (its counts, ``num_*``, excluded):
    ``AP@<t>`` and ``AP@<t>/<class>`` per IoU threshold and class, ``minADE``, ``minFDE``, ``MR``, ``EPA``
    and ``EPA/<class>``."""
    names = []
    for threshold in config.iou_thresholds:
        names += [ap_key(threshold)] + [ap_key(threshold, c) for c in config.class_names]
    return names + ["minADE", "minFDE", "MR", "EPA"] + [f"EPA/{c}" for c in config.class_names]


@dataclass(kw_only=True)
class StageEnd:
    """Why and where a stage ended."""

    step: int
    """Optimizer step the stage ended at."""
    reason: str
    """``plateau`` (the metric stopped improving) or ``cap`` (the stage's ``steps`` were reached)."""
    message: str
    """One human-readable line, e.g. ``plateau: AP@0.5 best 0.41 at step 400, no improvement >= 0.005 in 3
    evaluations``."""
    metric: str
    """The watched metric."""
    best: float | None
    """Its best value over the plateau evaluations (None when none gave a number)."""
    best_step: int | None
    """Step of that best value."""
    evaluations: int
    """Plateau evaluations made in the stage."""


@dataclass(kw_only=True)
class PlateauState:
    """What the rule remembers between evaluations (saved with each checkpoint)."""

    best: float | None = None
    best_step: int | None = None
    since_best: int = 0
    """Evaluations since the best one (every evaluation so far when there is no best yet)."""
    evaluations: int = 0
    ended: dict[str, Any] | None = None
    """The :class:`StageEnd` decided, as a dict, once the stage has ended."""


class PlateauRule:
    """Stop after ``patience`` evaluations in a row without an improvement of at least ``min_delta``.

    An improvement is ``value > best + min_delta`` (mode ``max``) or ``value < best - min_delta`` (mode
    ``min``); the first finite value is always one. A NaN (or infinite) value never improves and counts as
    an evaluation without improvement. ``cap`` is the stage's ``steps``: an evaluation at or past it ends the
    stage with reason ``cap`` unless the plateau rule fires at the same evaluation.
    """

    def __init__(self, *, metric: str, mode: str, patience: int, min_delta: float, cap: int,
                 state: dict[str, Any] | None = None) -> None:
        if mode not in MODES or patience < 1 or min_delta < 0 or cap < 1:
            raise ValueError(f"bad plateau rule: mode={mode!r} patience={patience} min_delta={min_delta} cap={cap}")
        self.metric, self.mode, self.patience, self.min_delta, self.cap = metric, mode, patience, min_delta, cap
        self.state = PlateauState(**state) if state else PlateauState()

    @property
    def ended(self) -> StageEnd | None:
        """The end already decided (also after a resume from a checkpoint saved at it), or None."""
        return StageEnd(**self.state.ended) if self.state.ended else None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        best = self.state.best
        if best is None:
            return True
        return value > best + self.min_delta if self.mode == "max" else value < best - self.min_delta

    def update(self, step: int, value: float) -> StageEnd | None:
        """Record the evaluation at ``step``; the end it decides (plateau, or cap at ``step >= cap``) or None."""
        s = self.state
        if s.ended:
            raise RuntimeError(f"the stage already ended at step {s.ended['step']}")
        s.evaluations += 1
        value = float(value)
        if self._improves(value):
            s.best, s.best_step, s.since_best = value, step, 0
        else:
            s.since_best += 1
        if s.since_best >= self.patience:
            return self._end(step, "plateau", f"plateau: {self.metric} {self._best_text()}, no improvement >= "
                                              f"{self.min_delta:g} in {s.since_best} evaluations")
        if step >= self.cap:
            return self.end_at_cap(step)
        return None

    def end_at_cap(self, step: int) -> StageEnd:
        """The end of a stage whose ``steps`` were reached without a plateau."""
        return self._end(step, "cap", f"cap: steps reached ({step}); {self.metric} {self._best_text()}")

    def _best_text(self) -> str:
        s = self.state
        if s.best is None:
            return "never finite" if s.evaluations else "not evaluated"
        return f"best {s.best:.4g} at step {s.best_step}"

    def _end(self, step: int, reason: str, message: str) -> StageEnd:
        s = self.state
        end = StageEnd(step=step, reason=reason, message=message, metric=self.metric, best=s.best,
                       best_step=s.best_step, evaluations=s.evaluations)
        s.ended = asdict(end)
        return end
