"""When a stage with ``stages.<name>.until`` ends: a plateau of a validation metric, or its step cap.

:class:`PlateauRule` is pure (no I/O, no collectives): it is fed one metric value per plateau evaluation
and decides. Its state is a small JSON-able dict, saved in the checkpoint's train state so that a resumed
run continues the count where the checkpoint left it and takes the same decision as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
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
    also_best: dict[str, float] = field(default_factory=dict)
    """Best value so far of each of the rule's ``also`` metrics (those that were ever finite)."""
    ended: dict[str, Any] | None = None
    """The :class:`StageEnd` decided, as a dict, once the stage has ended."""


def improves(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    """Whether ``value`` improves on ``best``: ``value > best + min_delta`` (mode ``max``) or ``value < best -
    min_delta`` (mode ``min``); the first finite value always does, a NaN or infinite one never."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class PlateauRule:
    """Stop after ``patience`` evaluations in a row in which neither ``metric`` nor any of the ``also`` metrics
    improved by at least ``min_delta`` (``improves``; each ``also`` metric in its default mode).

    A NaN (or infinite) value never improves and counts as an evaluation without improvement. ``cap`` is the
    stage's ``steps``: an evaluation at or past it ends the stage with reason ``cap`` unless the plateau rule
    fires at the same evaluation. ``best`` and ``best_step`` are ``metric``'s.
    """

    def __init__(self, *, metric: str, mode: str, patience: int, min_delta: float, cap: int,
                 also: tuple[str, ...] = (), state: dict[str, Any] | None = None) -> None:
        if mode not in MODES or patience < 1 or min_delta < 0 or cap < 1:
            raise ValueError(f"bad plateau rule: mode={mode!r} patience={patience} min_delta={min_delta} cap={cap}")
        self.metric, self.mode, self.patience, self.min_delta, self.cap = metric, mode, patience, min_delta, cap
        self.also = tuple(also)
        self.state = PlateauState(**state) if state else PlateauState()

    @property
    def ended(self) -> StageEnd | None:
        """The end already decided (also after a resume from a checkpoint saved at it), or None."""
        return StageEnd(**self.state.ended) if self.state.ended else None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    def update(self, step: int, value: float, also: dict[str, float] | None = None) -> StageEnd | None:
        """Record the evaluation at ``step`` (``value`` of ``metric``, ``also``: the ``also`` metrics' values,
        missing ones NaN); the end it decides (plateau, or cap at ``step >= cap``) or None."""
        s = self.state
        if s.ended:
            raise RuntimeError(f"the stage already ended at step {s.ended['step']}")
        s.evaluations += 1
        value = float(value)
        improved = improves(value, s.best, self.mode, self.min_delta)
        if improved:
            s.best, s.best_step = value, step
        for name in self.also:
            other = float((also or {}).get(name, math.nan))
            if improves(other, s.also_best.get(name), default_mode(name), self.min_delta):
                s.also_best[name] = other
                improved = True
        if improved:
            s.since_best = 0
        else:
            s.since_best += 1
        if s.since_best >= self.patience:
            watched = " / ".join((self.metric, *self.also))
            return self._end(step, "plateau", f"plateau: {self.metric} {self._best_text()}, no improvement of "
                                              f"{watched} >= {self.min_delta:g} in {s.since_best} evaluations")
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
