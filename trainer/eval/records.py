"""Compact per-frame evaluation records: everything the metrics need, as small CPU numpy arrays.

Matching (IoU, greedy assignment, trajectory errors) happens once per frame when the record is
made, so records are cheap to keep for a whole split and to gather across ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from models.batch import Batch
from models.detections import SceneDetections
from trainer.data.box_range import boxes_in_range
from trainer.eval.ap import detection_tp_flags
from trainer.eval.config import EvalConfig
from trainer.eval.iou import bev_iou, centre_distance_bev
from trainer.eval.distance import distance_bins
from trainer.eval.matching import class_compatible, greedy_match, hungarian_match
from trainer.eval.prediction import min_ade_fde


@dataclass(kw_only=True)
class FrameRecord:
    """One evaluated scene (sample)."""

    key: str
    """Sample key (Batch.keys entry); duplicates across ranks are dropped by key."""
    det_scores: np.ndarray
    """[N] float32 detection scores."""
    det_labels: np.ndarray
    """[N] int64 detection classes."""
    det_tp: np.ndarray
    """[len(iou_thresholds), N] bool TP flag of each detection at each IoU threshold."""
    gt_labels: np.ndarray
    """[M] int64 classes of the real ground-truth objects."""
    pred_labels: np.ndarray
    """[P] int64 classes of prediction-matched objects whose ground truth has a valid future."""
    pred_min_ade: np.ndarray
    """[P] float64 minADE of those objects (m)."""
    pred_min_fde: np.ndarray
    """[P] float64 minFDE of those objects (m); NaN where the protocol gives none (vip3d: last step invalid)."""
    pred_fp_labels: np.ndarray
    """[F] int64 classes of detections above the score threshold that matched no ground truth."""
    pred_gt_labels: np.ndarray
    """[G] int64 classes of ground-truth objects eligible for EPA's N_GT (at least one valid future step;
    vip3d: the last step valid)."""
    det_bins: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """[N] int64 distance bin of each detection (``trainer.eval.distance``; -1 none)."""
    gt_bins: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """[M] int64 distance bin of each ground-truth object."""
    det_tp_binned: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    """[len(iou_thresholds), N] bool TP flags when matching only within a distance bin (empty without bins)."""


def _numpy(tensor: torch.Tensor, dtype: type) -> np.ndarray:
    """Any-device, any-dtype (bf16 included) tensor -> CPU numpy array of ``dtype``."""
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    return tensor.numpy().astype(dtype)


def _check_detections(det: SceneDetections, key: str) -> None:
    n = det.boxes.shape[0]
    if det.boxes.ndim != 2 or det.boxes.shape[1] != 7:
        raise ValueError(f"{key}: detections.boxes must be [N, 7], got {tuple(det.boxes.shape)}")
    if det.scores.shape != (n,) or det.labels.shape != (n,):
        raise ValueError(f"{key}: detections.scores / labels must be [{n}], got {tuple(det.scores.shape)}"
                         f" / {tuple(det.labels.shape)}")
    if det.trajectories.ndim != 4 or det.trajectories.shape[0] != n or det.trajectories.shape[-1] != 2:
        raise ValueError(f"{key}: detections.trajectories must be [{n}, K, T_f, 2], got "
                         f"{tuple(det.trajectories.shape)}")


def _prediction_matches(det_boxes: torch.Tensor, det_scores: np.ndarray, det_labels: np.ndarray,
                        gt_boxes: torch.Tensor, gt_labels: np.ndarray, iou: np.ndarray,
                        config: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """(confident [N] bool, matched GT index [N], -1 if none) of the prediction metrics, by ``config.pred_rules``."""
    rules = config.pred_rules
    confident = det_scores >= config.score_cut
    if rules.hungarian:  # ViP3D: confident detections only, one optimal assignment on centre distance
        matched = np.full(det_scores.shape[0], -1, dtype=np.int64)
        distance = centre_distance_bev(det_boxes, gt_boxes).numpy()
        if not rules.class_aware:
            matched[confident] = hungarian_match(distance[confident], config.pred_match_distance)
            return confident, matched
        for c in np.unique(det_labels[confident]):
            dets, gts = np.nonzero(confident & (det_labels == c))[0], np.nonzero(gt_labels == c)[0]
            sub = hungarian_match(distance[np.ix_(dets, gts)], config.pred_match_distance)
            matched[dets[sub >= 0]] = gts[sub[sub >= 0]]
        return confident, matched
    if config.pred_match == "iou":
        affinity = iou
        allowed = iou >= config.pred_match_iou
    else:
        distance = centre_distance_bev(det_boxes, gt_boxes).numpy()
        affinity = -distance
        allowed = distance <= config.pred_match_distance
    if rules.class_aware:
        allowed = allowed & class_compatible(det_labels, gt_labels)
    return confident, greedy_match(det_scores, affinity, allowed & confident[:, None])


def make_frame_record(det: SceneDetections, batch: Batch, scene: int, config: EvalConfig) -> FrameRecord:
    """Match one scene's detections to its ground truth and keep the compact result.

    det: decoded detections of scene ``scene`` of ``batch``; see docs/METRICS.md for the rules.
    """
    key = batch.keys[scene]
    _check_detections(det, key)
    num_classes = len(config.class_names)
    gt_valid = _numpy(batch.gt_mask[scene], bool)
    gt_np = _numpy(batch.gt_boxes[scene], np.float64)
    det_np = _numpy(det.boxes, np.float64)
    det_keep = np.ones(det_np.shape[0], dtype=bool)
    if config.range is not None:  # the evaluation range, by the AP protocol's rule
        gt_valid = gt_valid & boxes_in_range(gt_np, config.range, config.ap_rules.range_rule)
        det_keep = boxes_in_range(det_np, config.range, config.ap_rules.range_rule)
    gt_boxes = torch.from_numpy(gt_np[gt_valid])
    gt_labels = _numpy(batch.gt_classes[scene], np.int64)[gt_valid]
    det_boxes = torch.from_numpy(det_np[det_keep])
    det_scores = _numpy(det.scores, np.float32)[det_keep]
    det_labels = _numpy(det.labels, np.int64)[det_keep]
    for name, labels in (("detections.labels", det_labels), ("gt_classes", gt_labels)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{key}: {name} must lie in [0, {num_classes}) for class_names "
                             f"{config.class_names}, got {sorted(set(labels.tolist()))}")

    ap_rules = config.ap_rules
    iou = bev_iou(det_boxes, gt_boxes).numpy()
    iou_ap = iou.astype(np.float32) if ap_rules.iou_float32 else iou
    det_tp = np.stack([detection_tp_flags(iou_ap, det_scores, det_labels, gt_labels, t, sort_kind=ap_rules.sort_kind)
                       for t in config.iou_thresholds])
    det_bins = distance_bins(det_np[det_keep], config.distance_bins)
    gt_bins = distance_bins(gt_np[gt_valid], config.distance_bins)
    same_bin = (det_bins[:, None] == gt_bins[None, :]) & (det_bins[:, None] >= 0)
    det_tp_binned = np.stack([detection_tp_flags(np.where(same_bin, iou_ap, -1.0), det_scores, det_labels, gt_labels, t,
                                                 sort_kind=ap_rules.sort_kind) for t in config.iou_thresholds]) \
        if config.distance_bins else np.zeros((0, det_scores.shape[0]), dtype=bool)

    confident, matched_gt = _prediction_matches(det_boxes, det_scores, det_labels, gt_boxes, gt_labels, iou, config)
    pred_rules = config.pred_rules
    future = _numpy(batch.gt_future[scene], np.float64)[gt_valid]  # [M, T_f, 2]
    future_valid = _numpy(batch.gt_future_valid[scene], bool)[gt_valid]  # [M, T_f]
    has_future = future_valid.any(axis=1)
    is_matched = matched_gt >= 0
    matched_with_future = np.zeros_like(is_matched)
    matched_with_future[is_matched] = has_future[matched_gt[is_matched]]
    pair_det = np.nonzero(matched_with_future)[0]
    pair_gt = matched_gt[pair_det]
    trajectories = _numpy(det.trajectories, np.float64)[det_keep]
    if pair_det.size and trajectories.shape[2] != future.shape[1]:
        raise ValueError(f"{key}: predicted horizon {trajectories.shape[2]} != ground-truth horizon {future.shape[1]}")
    min_ade, min_fde = min_ade_fde(trajectories[pair_det], future[pair_gt], future_valid[pair_gt],
                                   fde_at_last_step=pred_rules.fde_at_last_step)
    eligible = future_valid[:, -1] if pred_rules.fde_at_last_step else has_future
    count_fp = gt_labels.size > 0 or not pred_rules.fp_only_with_gt
    return FrameRecord(
        key=key,
        det_scores=det_scores,
        det_labels=det_labels,
        det_tp=det_tp,
        gt_labels=gt_labels,
        pred_labels=gt_labels[pair_gt],
        pred_min_ade=min_ade,
        pred_min_fde=min_fde,
        pred_fp_labels=det_labels[confident & ~is_matched] if count_fp else np.zeros(0, dtype=np.int64),
        pred_gt_labels=gt_labels[eligible] if future_valid.shape[1] else np.zeros(0, dtype=np.int64),
        det_bins=det_bins,
        gt_bins=gt_bins,
        det_tp_binned=det_tp_binned,
    )
