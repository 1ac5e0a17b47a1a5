"""Task losses computed from the model's output dataclass and the collated Batch (never inside the model)."""

from trainer.losses.config import TaskLossConfig
from trainer.losses.task_losses import TaskLosses, detection_losses, prediction_losses, task_losses

__all__ = ["TaskLossConfig", "TaskLosses", "detection_losses", "prediction_losses", "task_losses"]
