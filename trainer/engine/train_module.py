"""The module the engine trains: the model plus the stage's task (its loss and balancing state).

DeepSpeed optimises the parameters of the module it wraps, so loss-level learnable state (uncertainty
weights, inside the task) lives here next to the model, and the forward returns the loss. The model itself
(``models.V2XModel``) stays loss-free: it returns predictions and Z.
"""

from __future__ import annotations

import torch
from torch import nn

from models.batch import Batch
from models.v2x_model import V2XModel
from trainer.config import StageConfig, TrainConfig
from trainer.tasks import StageTask, StepResult, make_task, stage_view


class TrainingModule(nn.Module):
    """``model`` + one stage's ``task``; ``forward(batch, generator)`` -> ``StepResult``."""

    def __init__(self, model: V2XModel, task: StageTask) -> None:
        super().__init__()
        self.model = model
        self.task = task
        task.configure_model(model)

    @classmethod
    def for_stage(cls, model: V2XModel, stage: StageConfig, cfg: TrainConfig) -> "TrainingModule":
        return cls(model, make_task(stage, cfg))

    @property
    def stage(self) -> StageConfig:
        return self.task.stage

    def train(self, mode: bool = True) -> "TrainingModule":
        """Train mode, except that modules frozen by the stage stay in eval mode (their batch-norm
        statistics are frozen with their weights)."""
        super().train(mode)
        for prefix in self.stage.freeze:
            self.model.get_submodule(prefix).eval()
        return self

    def forward(self, batch: Batch, generator: torch.Generator) -> StepResult:
        return self.task.step(self.model, stage_view(batch, self.stage), generator)
