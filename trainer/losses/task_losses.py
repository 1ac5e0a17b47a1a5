"""Named detection + prediction losses for one batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.batch import Batch
from models.bev import BevGeometry
from models.output import ModelOutput
from trainer.losses.config import TaskLossConfig
from trainer.losses.detection import box_regression_loss, centre_focal_loss, iou_score_loss
from trainer.losses.heatmap_targets import heatmap_targets, objects_on_map
from trainer.losses.prediction import read_out_trajectories, winner_takes_all_losses
from trainer.losses.refinement import refinement_loss
from trainer.losses.track import past_offset_loss, track_losses


@dataclass
class TaskLosses:
    """Scalar losses (fp32). ``detection`` and ``prediction`` are the weighted per-task sums; ``total`` their sum."""

    heatmap: Tensor
    box: Tensor
    iou: Tensor
    refine: Tensor
    trajectory: Tensor
    mode: Tensor
    past: Tensor
    track_refine: Tensor
    track_trajectory: Tensor
    track_mode: Tensor
    detection: Tensor
    prediction: Tensor
    total: Tensor

    def as_floats(self) -> dict[str, float]:
        """Detached Python floats for logging, keyed by field name."""
        return {name: float(value.detach()) for name, value in vars(self).items()}


def detection_losses(output: ModelOutput, batch: Batch, geometry: BevGeometry,
                     config: TaskLossConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(focal heatmap loss, code-weighted L1 box loss, IoU-branch loss, point-refinement loss; the last two 0
    without their branch) for an output of the ``det`` head."""
    if output.heatmap is None or output.box_codes is None:
        raise ValueError("output has no detection predictions; run the model with heads containing 'det'")
    cells, usable = objects_on_map(batch.gt_boxes, batch.gt_mask, geometry)
    targets = heatmap_targets(batch.gt_boxes.float(), batch.gt_classes, usable, cells, geometry,
                              output.heatmap.shape[1], min_overlap=config.min_overlap,
                              min_radius=config.min_radius_cells(geometry.cell_x))
    box = box_regression_loss(output.box_codes, batch.gt_boxes, cells, usable, geometry,
                              torch.tensor(config.code_weights), batch.gt_classes)
    iou = (output.z.new_zeros((), dtype=torch.float32) if output.iou_logits is None else
           iou_score_loss(output.iou_logits, output.box_codes, batch.gt_boxes, cells, usable, geometry,
                          batch.gt_classes))
    refine = (output.z.new_zeros((), dtype=torch.float32) if output.refine_residuals is None else
              refinement_loss(output.refine_residuals, output.refine_proposals, batch.gt_boxes, usable))
    return centre_focal_loss(output.heatmap, targets), box, iou, refine


def prediction_losses(output: ModelOutput, batch: Batch, geometry: BevGeometry) -> tuple[Tensor, Tensor]:
    """(winner-takes-all regression, mode cross-entropy), read out at the GT centres."""
    if output.trajectories is None or output.mode_logits is None:
        raise ValueError("output has no trajectory predictions; run the model with heads containing 'pred'")
    _, usable = objects_on_map(batch.gt_boxes, batch.gt_mask, geometry)
    centres = batch.gt_boxes[..., :2].float()
    offsets, logits = read_out_trajectories(output.trajectories, output.mode_logits, centres, geometry)
    target = batch.gt_future.float() - centres[:, :, None]
    return winner_takes_all_losses(offsets, logits, target, batch.gt_future_valid, usable)


def task_losses(output: ModelOutput, batch: Batch, geometry: BevGeometry,
                config: TaskLossConfig | None = None) -> TaskLosses:
    """All task losses; a head that did not run contributes zeros."""
    config = config or TaskLossConfig()
    zero = output.z.new_zeros((), dtype=torch.float32)
    heatmap, box, iou, refine = (detection_losses(output, batch, geometry, config) if output.heatmap is not None
                                 else (zero, zero, zero, zero))
    trajectory, mode = prediction_losses(output, batch, geometry) if output.trajectories is not None else (zero, zero)
    detection = (config.heatmap_weight * heatmap + config.box_weight * box + config.iou_weight * iou
                 + config.refine_weight * refine)
    past = past_offset_loss(output.past_offsets, batch, geometry) if output.past_offsets is not None else zero
    track_refine, track_trajectory, track_mode = (track_losses(output.track, batch, geometry)
                                                  if output.track is not None else (zero, zero, zero))
    prediction = (config.trajectory_weight * trajectory + config.mode_weight * mode + config.past_weight * past
                  + config.track_weight * (track_refine + track_trajectory) + config.mode_weight * track_mode)
    return TaskLosses(heatmap=heatmap, box=box, iou=iou, refine=refine, trajectory=trajectory, mode=mode,
                      past=past, track_refine=track_refine, track_trajectory=track_trajectory, track_mode=track_mode,
                      detection=detection,
                      prediction=prediction, total=detection + prediction)
