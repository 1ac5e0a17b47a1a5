"""Detection average precision: per-frame TP flags, global score sort, VOC all-point interpolation."""

from __future__ import annotations

import numpy as np

from trainer.eval.matching import greedy_match


def detection_tp_flags(
    iou: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray, gt_labels: np.ndarray, threshold: float, *,
    sort_kind: str = "stable",
) -> np.ndarray:
    """True-positive flags of one frame's detections at one IoU threshold.

    Detections of each class, highest score first (``np.argsort`` ``sort_kind`` over that class's
    detections), are matched greedily to the unmatched ground truth of the same class with the highest IoU,
    if that IoU >= ``threshold``.

    iou: [N, M]; det_scores, det_labels: [N]; gt_labels: [M] -> [N] bool, in the input order.
    """
    iou, det_scores, det_labels = np.asarray(iou), np.asarray(det_scores), np.asarray(det_labels)
    tp = np.zeros(det_scores.shape[0], dtype=bool)
    for c in np.unique(det_labels):
        dets, gts = np.nonzero(det_labels == c)[0], np.nonzero(np.asarray(gt_labels) == c)[0]
        sub = iou[np.ix_(dets, gts)]
        tp[dets] = greedy_match(det_scores[dets], sub, sub >= threshold, sort_kind=sort_kind) >= 0
    return tp


def voc_average_precision(tp_sorted: np.ndarray, num_gt: int) -> float:
    """VOC all-point interpolated AP (area under the monotone precision envelope).

    tp_sorted: [N] bool TP flags of all detections sorted by descending score; num_gt > 0 ground truth.
    """
    if num_gt <= 0:
        raise ValueError(f"num_gt must be > 0 to define recall, got {num_gt}")
    tp_sorted = np.asarray(tp_sorted, dtype=bool)
    if tp_sorted.sum() > num_gt:
        raise ValueError(f"{int(tp_sorted.sum())} true positives exceed num_gt={num_gt}")
    tp_cum = np.cumsum(tp_sorted, dtype=np.float64)
    fp_cum = np.cumsum(~tp_sorted, dtype=np.float64)
    recall = np.concatenate([[0.0], tp_cum / num_gt, [1.0]])
    precision = np.concatenate([[0.0], tp_cum / np.maximum(tp_cum + fp_cum, 1.0), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope from the right
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def average_precision(scores: list[np.ndarray], tp: list[np.ndarray], num_gt: int, *, global_sort: bool = True,
                      sort_kind: str = "stable") -> float:
    """AP over many frames: concatenate per-frame TP/FP lists, sort globally by score, VOC AP.

    scores, tp: one [N_i] array per frame (aligned); num_gt: ground truth over all frames.
    Ties in score keep frame order (``sort_kind`` stable). With ``global_sort`` False each frame's list is
    sorted by score on its own and the frames are concatenated in order (OpenCOOD's default).
    Returns NaN when num_gt == 0.
    """
    if len(scores) != len(tp):
        raise ValueError(f"scores and tp must list the same frames, got {len(scores)} and {len(tp)}")
    if not global_sort:
        frame_orders = [np.argsort(-np.asarray(s, dtype=np.float64).reshape(-1), kind=sort_kind) for s in scores]
        scores = [np.zeros(len(o)) for o in frame_orders]  # order fixed: equal keys keep it under a stable sort
        if any(np.size(t) != len(o) for t, o in zip(tp, frame_orders)):
            raise ValueError("scores and tp of a frame differ in length")
        tp = [np.asarray(t, dtype=bool).reshape(-1)[o] for t, o in zip(tp, frame_orders)]
        sort_kind = "stable"
    if num_gt == 0:
        return float("nan")
    all_scores = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores] + [np.zeros(0)])
    all_tp = np.concatenate([np.asarray(t, dtype=bool).reshape(-1) for t in tp] + [np.zeros(0, dtype=bool)])
    if all_scores.shape != all_tp.shape:
        raise ValueError(f"scores ({all_scores.shape[0]}) and tp ({all_tp.shape[0]}) lengths differ")
    order = np.argsort(-all_scores, kind=sort_kind)
    return voc_average_precision(all_tp[order], num_gt)
