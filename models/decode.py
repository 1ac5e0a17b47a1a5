"""Decoding dense head outputs into scored oriented boxes with trajectories (``SceneDetections``)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from models.bev import BevGeometry
from models.box_coding import class_codes, decode_boxes
from models.detections import SceneDetections
from models.output import ModelOutput
from models.warp import sample_at_points

NMS_RADIUS_M = 2.0
"""Default suppression radius (metres) of the per-class circle NMS (decoding; late fusion's merge across agents)."""


def circle_nms(centres: Tensor, scores: Tensor, radius: Tensor) -> Tensor:
    """Greedy non-maximum suppression by centre distance.

    centres: [N, 2]; scores: [N]; radius: [N] suppression radius of each candidate (metres).
    Returns int64 indices of kept candidates, highest score first.
    """
    order = scores.argsort(descending=True)
    centres, radius = centres[order], radius[order]
    dist = torch.cdist(centres.float(), centres.float())
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=centres.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= dist[i] < radius[i]
    return order[torch.tensor(keep, dtype=torch.long, device=centres.device)]


def rectify_scores(scores: Tensor, iou: Tensor, alpha: float) -> Tensor:
    """IoU-aware scoring (AFDetV2): ``scores^(1 - alpha) * iou^alpha``; scores, iou in [0, 1], same shape."""
    return scores.pow(1.0 - alpha) * iou.clamp_min(0).pow(alpha)


def decode_detections(output: ModelOutput, geometry: BevGeometry, *, score_threshold: float = 0.1,
                      max_detections: int = 100, nms_radius: list[float] | float = NMS_RADIUS_M,
                      iou_rectifier: float = 0.0,
                      refine: Callable[[int, Tensor, Tensor], Tensor] | None = None,
                      tracks: Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
                      ) -> list[SceneDetections]:
    """Heatmap peaks (3x3 max-pool) -> top-k -> IoU rectification (``iou_rectifier`` > 0, which needs the IoU
    branch's ``output.iou_logits``) -> score threshold -> ``refine(scene, boxes [N, 7], labels [N])`` -> boxes
    [N, 7] (the point refinement; None = as decoded) -> per-class circle NMS -> boxes, with the trajectory
    modes read out (bilinear) at each detected centre, or given by ``tracks(scene, boxes [N, 7], labels [N])`` ->
    (trajectories [N, K, T_f, 2] metres from each centre, mode logits [N, K]) (the track stage; None = read out).
    One ``SceneDetections`` per scene."""
    if output.heatmap is None or output.box_codes is None:
        raise ValueError("decode_detections needs the 'det' head's outputs")
    if iou_rectifier > 0 and output.iou_logits is None:
        raise ValueError("iou_rectifier > 0 needs the detection head's IoU branch (output.iou_logits)")
    heat = torch.sigmoid(output.heatmap.float())  # [B, K, H, W]
    b, k, h, w = heat.shape
    radii = torch.as_tensor(nms_radius, dtype=torch.float32, device=heat.device).expand(k)
    peaks = heat * (heat == F.max_pool2d(heat, 3, stride=1, padding=1))
    scores, flat = peaks.flatten(1).topk(min(max_detections, k * h * w), dim=1)
    if iou_rectifier > 0:
        iou = torch.sigmoid(output.iou_logits.float()).flatten(1)  # [B, H*W]
        scores = rectify_scores(scores, iou.gather(1, flat % (h * w)), iou_rectifier)
    results = []
    for s in range(b):
        keep = scores[s] > score_threshold
        score, idx = scores[s][keep], flat[s][keep]
        label, cell = idx // (h * w), idx % (h * w)
        cells = torch.stack((cell % w, cell // w), dim=-1)
        codes = class_codes(output.box_codes[s].float().flatten(1)[:, cell].T, label)  # [N, 8]
        boxes = decode_boxes(codes, cells, geometry)
        if refine is not None:
            boxes = refine(s, boxes, label)
        kept = []
        for cls in label.unique():
            members = (label == cls).nonzero().squeeze(1)
            kept.append(members[circle_nms(boxes[members, :2], score[members], radii[cls].expand(len(members)))])
        order = torch.cat(kept) if kept else label.new_zeros(0)
        order = order[score[order].argsort(descending=True)]
        boxes, score, label = boxes[order], score[order], label[order]
        if tracks is not None:
            offsets, logits = tracks(s, boxes, label)
            results.append(SceneDetections(boxes=boxes, scores=score, labels=label.long(),
                                           trajectories=offsets.float() + boxes[:, None, None, :2],
                                           mode_scores=torch.softmax(logits.float(), dim=-1)))
        else:
            results.append(_with_trajectories(output, s, boxes, score, label, geometry))
    return results


def _with_trajectories(output: ModelOutput, scene: int, boxes: Tensor, scores: Tensor, labels: Tensor,
                       geometry: BevGeometry) -> SceneDetections:
    n = boxes.shape[0]
    if output.trajectories is None or output.mode_logits is None:
        raise ValueError("decode_detections needs the 'pred' head's outputs for SceneDetections trajectories")
    _, k, t, _, h, w = output.trajectories.shape
    maps = torch.cat([output.trajectories[scene].float().reshape(k * t * 2, h, w), output.mode_logits[scene].float()])
    sampled = sample_at_points(maps[None], boxes[None, :, :2], geometry)[0]  # [N, K*T*2 + K]
    trajectories = sampled[:, : k * t * 2].reshape(n, k, t, 2) + boxes[:, None, None, :2]
    return SceneDetections(boxes=boxes, scores=scores, labels=labels.long(), trajectories=trajectories,
                           mode_scores=torch.softmax(sampled[:, k * t * 2:], dim=-1))
