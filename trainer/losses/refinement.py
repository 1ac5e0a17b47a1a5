"""The point refinement's training proposals and loss (``models.point_refine``; ``model.refine_points`` > 0).

Training proposals are the boxes the detection head decodes at each ground-truth object's centre cell (the
cell its box codes are trained at, and where its heatmap peak should be at inference), detached, so the
refinement learns to correct exactly the boxes it will be given; its loss reaches only its own PointNet.
"""

from __future__ import annotations

from torch import Tensor

from models.batch import Batch
from models.bev import BevGeometry
from models.box_coding import decode_boxes
from models.output import ModelOutput
from models.point_refine import encode_residuals
from models.v2x_model import V2XModel
from trainer.losses.detection import object_codes
from trainer.losses.heatmap_targets import objects_on_map


def object_proposals(box_codes: Tensor, batch: Batch, geometry: BevGeometry) -> tuple[Tensor, Tensor]:
    """(proposals [B, M, 7] detached, usable [B, M] bool): each object's box decoded at its centre cell."""
    cells, usable = objects_on_map(batch.gt_boxes, batch.gt_mask, geometry)
    codes = object_codes(box_codes.detach().float(), cells, batch.gt_classes)
    return decode_boxes(codes, cells, geometry), usable


def with_refinement(model: V2XModel, output: ModelOutput, batch: Batch) -> ModelOutput:
    """``output`` with ``refine_proposals`` and ``refine_residuals`` filled in when ``model`` has a point
    refinement and its detection head ran (what ``task_losses`` then trains); as it is otherwise."""
    if output.box_codes is not None and model.refine_head is not None:
        output.refine_proposals, _ = object_proposals(output.box_codes, batch, model.geometry)
        output.refine_residuals = model.refine_residuals(batch, output.refine_proposals, batch.gt_classes)
    return output


def refinement_loss(residuals: Tensor, proposals: Tensor, gt_boxes: Tensor, usable: Tensor) -> Tensor:
    """L1 between the predicted and the true residuals of usable proposals, summed over the 8 residual codes
    and divided by the number of usable objects (as ``box_regression_loss``).

    residuals: [B, M, 8]; proposals, gt_boxes: [B, M, 7]; usable: [B, M] bool.
    """
    target = encode_residuals(proposals.float(), gt_boxes.float())
    weight = usable[..., None].to(target.dtype)
    return ((residuals.float() - target).abs() * weight).sum() / weight.sum().clamp_min(1)
