"""What every stage task provides, and the input view a stage trains on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from torch import Tensor, nn

from models.batch import Batch
from models.v2x_model import V2XModel
from trainer.engine.batch_ops import current_frame_only, ego_only
from trainer.pretrain.targets import ReconTargets

if TYPE_CHECKING:
    from trainer.config import StageConfig, TrainConfig
    from trainer.runtime import Runtime


@dataclass
class StepResult:
    """The loss to back-propagate and detached values to log."""

    loss: Tensor
    logs: dict[str, Tensor]
    task_losses: tuple[Tensor, ...] = ()
    """Per-task losses (detection, prediction), for a balancing that back-propagates them separately."""
    recon: tuple[Tensor, ReconTargets] | None = None
    """Decoder output and targets of a pretraining step (for BEV images)."""


def stage_view(batch: Batch, stage: StageConfig) -> Batch:
    """The input a stage trains on (ego-only and/or current frame only)."""
    if stage.single_agent:
        batch = ego_only(batch)
    if not stage.temporal_fusion:
        batch = current_frame_only(batch)
    return batch


def stage_switches(stage: StageConfig) -> dict[str, bool]:
    """Model ``forward`` switches of a stage (modules a manual-pipeline stage does not use yet)."""
    return {"temporal_fusion": stage.temporal_fusion, "spatial_fusion": stage.spatial_fusion,
            "history_grad": stage.history_grad}


class StageTask(nn.Module):
    """One stage's task: its input view, heads, loss, balancing, backward and statistics.

    A task is an ``nn.Module`` so that loss-level learnable state (uncertainty weights) is trained, sharded
    and checkpointed with the model by the engine that wraps ``TrainingModule``. Subclasses set ``heads``
    and ``evaluates`` and implement ``step``.
    """

    heads: tuple[str, ...] = ()
    """Model heads the task runs."""
    evaluates: bool = True
    """Whether the stage has a validation evaluation (``evaluate``)."""

    def __init__(self, stage: StageConfig) -> None:
        super().__init__()
        self.stage = stage

    def configure_model(self, model: V2XModel) -> None:
        """Install what the task needs inside the model before training (the balancer's fork)."""

    def attach(self, model: V2XModel, engine: Any, runtime: Runtime) -> None:
        """Called once with the prepared engine and the runtime, before the first step (a balancing takes the
        runtime's all-reduce, or keeps the engine to drive its own backward)."""

    def step(self, model: V2XModel, batch: Batch, generator: torch.Generator) -> StepResult:
        """Forward and loss of one micro-batch (already in the stage's view)."""
        raise NotImplementedError

    def backward(self, runtime: Runtime, result: StepResult, loss: Tensor, *, boundary: bool) -> None:
        """Back-propagate one micro-batch's ``loss``; ``boundary``: the optimizer steps after it."""
        runtime.backward(loss, boundary=boundary)

    def evaluate(self, model: V2XModel, batches: Iterable[Batch], cfg: TrainConfig, *, device: torch.device,
                 gather: Callable[[object], list[object]] | None = None, max_batches: int = 0) -> dict[str, float]:
        """Validation metrics of ``model`` on ``batches`` (every rank calls this; with ``gather`` the result is
        identical on all ranks). Its keys are ``TASKS[stage.task].metrics``' names (and counts)."""
        raise NotImplementedError

    def stats(self, model: V2XModel) -> dict[str, float]:
        """Extra values to log after an optimizer step (balancer statistics)."""
        return {}
