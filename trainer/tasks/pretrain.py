"""Stage 1: multi-agent spatio-temporal masked reconstruction (the pretext task next to its decoder's loss)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterable

import torch
from torch import Tensor

from models.batch import Batch
from models.v2x_model import V2XModel
from trainer.pretrain.chamfer import masked_chamfer_loss
from trainer.pretrain.config import PretrainConfig
from trainer.pretrain.masking import random_cell_mask, world_cell_mask
from trainer.pretrain.targets import frame_to_ego, reconstruction_targets
from trainer.engine.stage_end import RECON_METRIC
from trainer.tasks.base import StageTask, StepResult, stage_switches, stage_view

if TYPE_CHECKING:
    from trainer.config import StageConfig, TrainConfig

EVAL_MASK_SEED = 20_000
"""Validation batch i is masked with a generator seeded ``EVAL_MASK_SEED + i``: the same masks at every
evaluation, so the reconstruction metric of two evaluations compares the model, not the masks."""


class PretrainTask(StageTask):
    """Mask voxels (``pretrain.mask_mode``), encode, decode points per masked BEV cell, Chamfer loss."""

    heads = ("recon",)

    def __init__(self, stage: StageConfig, config: PretrainConfig) -> None:
        super().__init__(stage)
        self.config = config

    def voxel_mask(self, model: V2XModel, batch: Batch, generator: torch.Generator) -> Tensor:
        """[V] bool stage-1 mask of the batch's voxels."""
        p, grid = self.config, model.config.grid
        if p.mask_mode == "random":
            return random_cell_mask(batch.voxel_coords, grid, cell=p.mask_cell, ratio=p.mask_ratio,
                                    generator=generator)
        return world_cell_mask(batch.voxel_coords, grid, frame_to_ego(batch), agents=batch.max_agents,
                               history=batch.history, cell=p.mask_cell, ratio=p.mask_ratio,
                               consistent_over_time=p.consistent_over_time, generator=generator)

    @torch.no_grad()
    def evaluate(self, model: V2XModel, batches: Iterable[Batch], cfg: TrainConfig, *, device: torch.device,
                 gather: Callable[[object], list[object]] | None = None, max_batches: int = 0) -> dict[str, float]:
        """``recon``: the masked Chamfer L1 on the validation split (eval mode, fixed masks; ``EVAL_MASK_SEED``),
        averaged over its samples on every rank."""
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for i, batch in enumerate(batches):
            if max_batches and i >= max_batches:
                break
            view = stage_view(batch.to(device), self.stage)
            result = self.step(model, view, torch.Generator().manual_seed(EVAL_MASK_SEED + i))
            total += float(result.loss) * view.num_scenes
            count += view.num_scenes
        model.train(was_training)
        parts = gather((total, count)) if gather is not None else [(total, count)]
        total, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
        return {RECON_METRIC: total / count if count else math.nan, "num_frames": float(count)}

    def step(self, model: V2XModel, batch: Batch, generator: torch.Generator) -> StepResult:
        mask = self.voxel_mask(model, batch, generator)
        out = model(batch, heads=self.heads, voxel_mask=mask, **stage_switches(self.stage))
        cfg = model.config
        targets = reconstruction_targets(batch, mask, cfg.grid, bev_shape=cfg.bev_shape, bev_stride=cfg.bev_stride,
                                         max_points=self.config.max_target_points)
        loss = masked_chamfer_loss(out.recon_points, targets)
        logs = {"loss/recon": loss.detach(), "loss/total": loss.detach(),
                "pretrain/masked_fraction": mask.float().mean().detach(),
                "pretrain/recon_cells": torch.tensor(float(targets.cell_index.numel()))}
        return StepResult(loss=loss, logs=logs, recon=(out.recon_points.detach(), targets))
