"""The module the engine trains: the model plus the stage's loss computation.

DeepSpeed optimises the parameters of the module it wraps, so loss-level learnable state
(uncertainty weights) lives here next to the model, and the forward returns the loss. The model
itself (``models.V2XModel``) stays loss-free: it returns predictions and Z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.batch import Batch
from models.v2x_model import V2XModel
from trainer.balancing.uncertainty import UncertaintyWeighting
from trainer.batch_ops import current_frame_only, ego_only
from trainer.config import StageConfig, TrainConfig
from trainer.losses.config import TaskLossConfig
from trainer.losses.task_losses import task_losses
from trainer.pretrain.chamfer import masked_chamfer_loss
from trainer.pretrain.config import PretrainConfig
from trainer.pretrain.masking import random_cell_mask, world_cell_mask
from trainer.pretrain.targets import ReconTargets, frame_to_ego, reconstruction_targets

TASK_HEADS = {"pretrain": ("recon",), "multitask": ("det", "pred"), "detection": ("det",),
              "prediction": ("pred",)}


@dataclass
class StepResult:
    """The loss to back-propagate and detached values to log."""

    loss: Tensor
    logs: dict[str, Tensor]
    task_losses: tuple[Tensor, ...] = ()
    """Per-task losses (detection, prediction) for parameter-level PCGrad; empty otherwise."""
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
    return {"temporal_fusion": stage.temporal_fusion, "spatial_fusion": stage.spatial_fusion}


class TrainingModule(nn.Module):
    """``model`` + the loss of one stage's task; ``forward(batch, generator)`` -> ``StepResult``."""

    def __init__(self, model: V2XModel, stage: StageConfig, *, loss_cfg: TaskLossConfig,
                 pretrain_cfg: PretrainConfig, uncertainty: UncertaintyWeighting | None = None) -> None:
        super().__init__()
        self.model = model
        self.stage = stage
        self.loss_cfg = loss_cfg
        self.pretrain_cfg = pretrain_cfg
        self.uncertainty = uncertainty

    @classmethod
    def for_stage(cls, model: V2XModel, stage: StageConfig, cfg: TrainConfig) -> "TrainingModule":
        uncertainty = None
        if stage.task == "multitask" and cfg.balancing.method == "uncertainty":
            uncertainty = UncertaintyWeighting(2, init_log_var=cfg.balancing.uncertainty_init_log_var)
        return cls(model, stage, loss_cfg=cfg.loss, pretrain_cfg=cfg.pretrain, uncertainty=uncertainty)

    def train(self, mode: bool = True) -> "TrainingModule":
        """Train mode, except that modules frozen by the stage stay in eval mode (their batch-norm
        statistics are frozen with their weights)."""
        super().train(mode)
        for prefix in self.stage.freeze:
            self.model.get_submodule(prefix).eval()
        return self

    def voxel_mask(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """[V] bool stage-1 mask of the batch's voxels."""
        p, grid = self.pretrain_cfg, self.model.config.grid
        if p.mask_mode == "random":
            return random_cell_mask(batch.voxel_coords, grid, cell=p.mask_cell, ratio=p.mask_ratio,
                                    generator=generator)
        return world_cell_mask(batch.voxel_coords, grid, frame_to_ego(batch), agents=batch.max_agents,
                               history=batch.history, cell=p.mask_cell, ratio=p.mask_ratio,
                               consistent_over_time=p.consistent_over_time, generator=generator)

    def forward(self, batch: Batch, generator: torch.Generator) -> StepResult:
        batch = stage_view(batch, self.stage)
        task = self.stage.task
        if task == "pretrain":
            return self._pretrain(batch, generator)
        out = self.model(batch, heads=TASK_HEADS[task], **stage_switches(self.stage))
        losses = task_losses(out, batch, self.model.geometry, self.loss_cfg)
        det = self.stage.det_weight * losses.detection
        pred = self.stage.pred_weight * losses.prediction
        logs = {f"loss/{k}": v.detach() for k, v in vars(losses).items() if k != "total"}
        if self.uncertainty is not None:
            total = self.uncertainty([det, pred])
            w = self.uncertainty.task_weights()
            logs.update({"balance/weight_det": w[0], "balance/weight_pred": w[1]})
        else:
            total = (det if task != "prediction" else 0.0) + (pred if task != "detection" else 0.0)
        logs["loss/total"] = total.detach()
        return StepResult(loss=total, logs=logs, task_losses=(det, pred))

    def _pretrain(self, batch: Batch, generator: torch.Generator) -> StepResult:
        mask = self.voxel_mask(batch, generator)
        out = self.model(batch, heads=("recon",), voxel_mask=mask, **stage_switches(self.stage))
        cfg = self.model.config
        targets = reconstruction_targets(batch, mask, cfg.grid, bev_shape=cfg.bev_shape, bev_stride=cfg.bev_stride,
                                         max_points=self.pretrain_cfg.max_target_points)
        loss = masked_chamfer_loss(out.recon_points, targets)
        logs = {"loss/recon": loss.detach(), "loss/total": loss.detach(),
                "pretrain/masked_fraction": mask.float().mean().detach(),
                "pretrain/recon_cells": torch.tensor(float(targets.cell_index.numel()))}
        return StepResult(loss=loss, logs=logs, recon=(out.recon_points.detach(), targets))
