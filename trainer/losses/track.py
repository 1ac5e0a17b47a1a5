"""The track stage's training inputs and losses (``models.track_decode``; ``model.track_decoder``).

At each ground-truth object the stage starts from the box the detection head decodes at its centre cell,
placed by the point refinement (what inference starts from, detached), or from the true box when the stage
runs no detection head. Its losses:
- ``past``: L1 of the prediction head's past positions at the true centres (this one trains the shared encoder,
  through the prediction branch of the task fork);
- ``track_refine``: L1 of the refinement's (du, dv) at each past frame and pass, against the true past positions;
- ``track_trajectory`` / ``track_mode``: winner-takes-all regression and mode cross-entropy of the decoded futures.
The last three reach only the refinement and decoder MLPs (their inputs are detached).
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.batch import Batch
from models.bev import BevGeometry
from models.output import ModelOutput, TrackOutputs
from models.point_refine import apply_residuals, encode_residuals, scene_points
from models.track_decode import read_past_offsets
from models.v2x_model import V2XModel
from trainer.losses.heatmap_targets import objects_on_map
from trainer.losses.prediction import winner_takes_all_losses


def with_tracks(model: V2XModel, output: ModelOutput, batch: Batch) -> ModelOutput:
    """``output`` with ``track`` filled in when ``model`` has a track decoder and its prediction head ran; as it
    is otherwise. Run after ``trainer.losses.refinement.with_refinement``."""
    if model.track_head is None or output.past_offsets is None:
        return output
    if output.refine_proposals is not None and output.refine_residuals is not None:
        origin = apply_residuals(output.refine_proposals.float(), output.refine_residuals.detach().float())
    else:
        origin = batch.gt_boxes.float()
    offsets = read_past_offsets(output.past_offsets.detach().float(), origin[..., :2], model.geometry)
    frames = [scene_points(batch, step) for step in range(offsets.shape[2])]
    parts = [model.track_futures([frame[s] for frame in frames], origin[s], batch.gt_classes[s], offsets[s])
             for s in range(batch.num_scenes)]
    proposals, residuals, trajectories, logits = (torch.stack(column) for column in zip(*parts))
    output.track = TrackOutputs(proposals=proposals, residuals=residuals, origin=origin.detach(),
                                trajectories=trajectories, mode_logits=logits)
    return output


def past_offset_loss(past_offsets: Tensor, batch: Batch, geometry: BevGeometry) -> Tensor:
    """L1 (summed over x, y; mean over valid past frames of usable objects) of the past positions read at the
    true centres. past_offsets: [B, S, 2, H, W]."""
    _, usable = objects_on_map(batch.gt_boxes, batch.gt_mask, geometry)
    centres = batch.gt_boxes[..., :2].float()
    steps = past_offsets.shape[1]
    predicted = read_past_offsets(past_offsets.float(), centres, geometry)  # [B, M, S, 2]
    target = batch.gt_past[:, :, :steps].float() - centres[:, :, None]
    weight = (batch.gt_past_valid[:, :, :steps] & usable[..., None]).to(predicted.dtype)
    return ((predicted - target).abs().sum(-1) * weight).sum() / weight.sum().clamp_min(1)


def track_losses(track: TrackOutputs, batch: Batch, geometry: BevGeometry) -> tuple[Tensor, Tensor, Tensor]:
    """(track_refine, track_trajectory, track_mode) of the track stage's outputs at the ground-truth objects."""
    _, usable = objects_on_map(batch.gt_boxes, batch.gt_mask, geometry)
    steps = track.proposals.shape[2]  # proposals [B, M, S, passes, 7]
    target_boxes = track.proposals.float().clone()
    target_boxes[..., :2] = batch.gt_past[:, :, :steps, None].float()
    target = encode_residuals(track.proposals.float(), target_boxes)[..., :2]
    weight = (batch.gt_past_valid[:, :, :steps] & usable[..., None])[..., None].expand(target.shape[:-1])
    weight = weight.to(target.dtype)
    refine = ((track.residuals[..., :2].float() - target).abs().sum(-1) * weight).sum() / weight.sum().clamp_min(1)
    origin = track.origin[..., None, :2].float()  # [B, M, 1, 2]
    regression, mode = winner_takes_all_losses(track.trajectories, track.mode_logits, batch.gt_future.float() - origin,
                                               batch.gt_future_valid, usable)
    return refine, regression, mode
