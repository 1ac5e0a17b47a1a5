"""The stage-task registry: ``stage.task`` names one entry; ``make_task`` is the only reader of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from trainer.balancer.strategies import BALANCINGS
from trainer.tasks.base import StageTask
from trainer.tasks.pretrain import PretrainTask
from trainer.tasks.supervised import SupervisedTask

if TYPE_CHECKING:
    from trainer.config import StageConfig, TrainConfig

TASKS: dict[str, Callable[[StageConfig, TrainConfig], StageTask]] = {
    "pretrain": lambda stage, cfg: PretrainTask(stage, cfg.pretrain),
    "multitask": lambda stage, cfg: SupervisedTask(stage, ("det", "pred"), cfg.loss,
                                                   BALANCINGS[cfg.balancing.method](cfg.balancing)),
    "detection": lambda stage, cfg: SupervisedTask(stage, ("det",), cfg.loss),
    "prediction": lambda stage, cfg: SupervisedTask(stage, ("pred",), cfg.loss),
}
"""``pretrain`` (masked reconstruction), ``multitask`` (detection + prediction, balanced by
``balancing.method``), ``detection`` or ``prediction`` (one head)."""


def make_task(stage: StageConfig, cfg: TrainConfig) -> StageTask:
    """The task object of ``stage`` (a fresh one per stage: it carries the stage's balancing state)."""
    return TASKS[stage.task](stage, cfg)
