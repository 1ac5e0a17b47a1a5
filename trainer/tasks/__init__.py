"""Stage tasks: one registered object per ``stage.task`` owns the stage's input view, heads, loss, balancing,
backward and statistics. ``TrainingModule`` runs ``task.step``; the loop runs ``task.backward`` and
``task.stats``."""

from trainer.tasks.base import StageTask, StepResult, stage_switches, stage_view
from trainer.tasks.registry import TASKS, make_task

__all__ = ["TASKS", "StageTask", "StepResult", "make_task", "stage_switches", "stage_view"]
