"""Stage 2 and the manual pipeline's supervised stages: detection and/or prediction heads, their losses, and
(with both heads) a balancing strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from torch import Tensor

from models.batch import Batch
from models.v2x_model import V2XModel
from trainer.balancer.strategies import Balancing
from trainer.losses.config import TaskLossConfig
from trainer.losses.refinement import with_refinement
from trainer.losses.task_losses import task_losses
from trainer.losses.track import with_tracks
from trainer.tasks.base import StageTask, StepResult, stage_switches

if TYPE_CHECKING:
    from trainer.config import StageConfig, TrainConfig
    from trainer.runtime import Runtime


class SupervisedTask(StageTask):
    """Runs ``heads`` (``det`` and/or ``pred``); the loss is the stage-weighted task loss of each head, combined
    by ``balancing`` when both run (``balancing.method``), summed otherwise."""

    def __init__(self, stage: StageConfig, heads: tuple[str, ...], loss: TaskLossConfig,
                 balancing: Balancing | None = None) -> None:
        super().__init__(stage)
        if not heads or set(heads) - {"det", "pred"}:
            raise ValueError(f"a supervised task runs 'det' and/or 'pred', got {heads}")
        if balancing is not None and len(heads) != 2:
            raise ValueError("a balancing strategy needs both the 'det' and 'pred' heads")
        self.heads = heads
        self.loss_config = loss
        self.balancing = balancing

    def configure_model(self, model: V2XModel) -> None:
        if self.balancing is not None:
            self.balancing.configure_model(model)

    def attach(self, model: V2XModel, engine: Any, runtime: Runtime) -> None:
        if self.balancing is not None:
            self.balancing.attach(model, engine, runtime)

    def evaluate(self, model: V2XModel, batches: Iterable[Batch], cfg: TrainConfig, *, device: torch.device,
                 gather: Callable[[object], list[object]] | None = None, max_batches: int = 0) -> dict[str, float]:
        """Detection AP and prediction metrics (``trainer.eval.model_eval.evaluate_model``) in the stage's view."""
        from trainer.eval.model_eval import evaluate_model  # it reads the task views: imported when first used

        return evaluate_model(model, batches, cfg, device=device, gather=gather, stage=self.stage,
                              max_batches=max_batches)

    def step(self, model: V2XModel, batch: Batch, generator: torch.Generator) -> StepResult:
        out = with_refinement(model, model(batch, heads=self.heads, **stage_switches(self.stage)), batch)
        out = with_tracks(model, out, batch)
        losses = task_losses(out, batch, model.geometry, self.loss_config)
        weighted = {"det": self.stage.det_weight * losses.detection, "pred": self.stage.pred_weight * losses.prediction}
        logs = {f"loss/{k}": v.detach() for k, v in vars(losses).items() if k != "total"}
        if self.balancing is not None:
            total = self.balancing.combine(weighted["det"], weighted["pred"], logs)
        else:
            total = weighted[self.heads[0]]
            for head in self.heads[1:]:
                total = total + weighted[head]
        logs["loss/total"] = total.detach()
        return StepResult(loss=total, logs=logs, task_losses=(weighted["det"], weighted["pred"]))

    def backward(self, runtime: Runtime, result: StepResult, loss: Tensor, *, boundary: bool) -> None:
        if self.balancing is None:
            runtime.backward(loss, boundary=boundary)
        else:
            self.balancing.backward(runtime, result.task_losses, loss, boundary=boundary)

    def stats(self, model: V2XModel) -> dict[str, float]:
        return {} if self.balancing is None else self.balancing.stats(model)
