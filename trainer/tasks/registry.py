"""The stage-task registry: ``stage.task`` names one entry; ``make_task`` is the only reader of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from trainer.balancer.strategies import BALANCINGS
from trainer.engine.stage_end import RECON_METRIC, plateau_metrics
from trainer.eval.config import EvalConfig
from trainer.tasks.base import StageTask
from trainer.tasks.pretrain import PretrainTask
from trainer.tasks.supervised import SupervisedTask

if TYPE_CHECKING:
    from trainer.config import StageConfig, TrainConfig

@dataclass(frozen=True)
class TaskSpec:
    """One registered stage task: how to build it, and the validation metrics its evaluation reports (what
    ``stages.<name>.until.metric`` may watch)."""

    build: Callable[[StageConfig, TrainConfig], StageTask]
    metrics: Callable[[EvalConfig], list[str]]


TASKS: dict[str, TaskSpec] = {
    "pretrain": TaskSpec(build=lambda stage, cfg: PretrainTask(stage, cfg.pretrain),
                         metrics=lambda ev: [RECON_METRIC]),
    "multitask": TaskSpec(build=lambda stage, cfg: SupervisedTask(stage, ("det", "pred"), cfg.loss,
                                                                  BALANCINGS[cfg.balancing.method](cfg.balancing)),
                          metrics=plateau_metrics),
    "detection": TaskSpec(build=lambda stage, cfg: SupervisedTask(stage, ("det",), cfg.loss), metrics=plateau_metrics),
    "prediction": TaskSpec(build=lambda stage, cfg: SupervisedTask(stage, ("pred",), cfg.loss),
                           metrics=plateau_metrics),
}
"""``pretrain`` (masked reconstruction), ``multitask`` (detection + prediction, balanced by
``balancing.method``), ``detection`` or ``prediction`` (one head)."""


def make_task(stage: StageConfig, cfg: TrainConfig) -> StageTask:
    """The task object of ``stage`` (a fresh one per stage: it carries the stage's balancing state)."""
    return TASKS[stage.task].build(stage, cfg)
