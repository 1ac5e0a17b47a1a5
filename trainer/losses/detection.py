"""Detection losses: focal loss on the centre heatmap, L1 on box codes at ground-truth centre cells."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models.bev import BevGeometry
from models.box_coding import BOX_CODE_SIZE, class_codes, decode_boxes, encode_boxes
from trainer.eval.iou import paired_bev_iou


def centre_focal_loss(logits: Tensor, targets: Tensor, *, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of peaks (>= 1).

    logits, targets: [B, K, H, W]; targets are Gaussian heatmaps with exact 1s at object centres.
    """
    logits = logits.float()
    positive = targets >= 1.0 - 1e-4
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_term = (1 - p) ** alpha * log_p
    neg_term = p ** alpha * (1 - targets) ** beta * log_not_p
    loss = -(torch.where(positive, pos_term, neg_term)).sum()
    return loss / positive.sum().clamp_min(1)


def gather_cells(maps: Tensor, cells: Tensor) -> Tensor:
    """maps: [B, C, H, W], cells: [B, M, 2] int (col, row) -> [B, M, C] values at those cells."""
    b, c, h, w = maps.shape
    flat = (cells[..., 1] * w + cells[..., 0]).long()  # [B, M]
    return maps.flatten(2).gather(2, flat[:, None, :].expand(b, c, -1)).transpose(1, 2)


def object_codes(box_codes: Tensor, cells: Tensor, gt_classes: Tensor | None) -> Tensor:
    """[B, 8 or K*8, H, W] codes at each object's cell, its own class's -> [B, M, 8]."""
    codes = gather_cells(box_codes, cells)
    if codes.shape[-1] != BOX_CODE_SIZE and gt_classes is None:
        raise ValueError("per-class box codes need gt_classes")
    return codes if gt_classes is None else class_codes(codes, gt_classes)


def box_regression_loss(box_codes: Tensor, gt_boxes: Tensor, cells: Tensor, usable: Tensor,
                        geometry: BevGeometry, code_weights: Tensor | None = None,
                        gt_classes: Tensor | None = None) -> Tensor:
    """CenterPoint's box loss: L1 per code element at the GT centre cells of usable objects, divided by
    the number of objects, times per-code weights and summed over the 8 codes (OpenPCDet's
    ``RegLossCenterNet`` followed by ``code_weights``; the caller applies the loc weight).

    box_codes: [B, 8, H, W], or [B, K*8, H, W] per class (then gt_classes [B, M] picks each object's);
    gt_boxes: [B, M, 7]; cells: [B, M, 2]; usable: [B, M] bool; code_weights: [8] (None = all ones).
    """
    predicted = object_codes(box_codes.float(), cells, gt_classes)  # [B, M, 8]
    target = encode_boxes(gt_boxes.float(), cells, geometry)
    weight = usable[..., None].to(predicted.dtype)
    per_code = ((predicted - target).abs() * weight).sum(dim=(0, 1)) / weight.sum().clamp_min(1)  # [8]
    if code_weights is None:
        return per_code.sum()
    if code_weights.shape != (BOX_CODE_SIZE,):
        raise ValueError(f"code_weights must have {BOX_CODE_SIZE} entries, got {tuple(code_weights.shape)}")
    return (per_code * code_weights.to(per_code)).sum()


def iou_score_loss(iou_logits: Tensor, box_codes: Tensor, gt_boxes: Tensor, cells: Tensor, usable: Tensor,
                   geometry: BevGeometry, gt_classes: Tensor | None = None) -> Tensor:
    """IoU-aware scoring's loss (AFDetV2): binary cross-entropy of the IoU branch at each usable object's centre
    cell against the BEV IoU of the box decoded there (codes detached) with the object, summed and divided by
    the number of objects.

    iou_logits: [B, 1, H, W]; box_codes: [B, 8 or K*8, H, W] (as ``box_regression_loss``); gt_boxes: [B, M, 7];
    cells: [B, M, 2]; usable: [B, M].
    """
    logits = gather_cells(iou_logits.float(), cells)[..., 0][usable]  # [N]
    decoded = decode_boxes(object_codes(box_codes.detach().float(), cells, gt_classes), cells, geometry)[usable]
    target = paired_bev_iou(decoded, gt_boxes.float()[usable])
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    return loss / usable.sum().clamp_min(1)
