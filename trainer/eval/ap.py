"""Detection average precision: per-frame TP flags, global score sort, VOC all-point interpolation."""

from __future__ import annotations

import numpy as np

from trainer.eval.matching import class_compatible, greedy_match


def detection_tp_flags(
    iou: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray, gt_labels: np.ndarray, threshold: float
) -> np.ndarray:
    """True-positive flags of one frame's detections at one IoU threshold.

    Detections, highest score first, are matched greedily to the unmatched ground truth of the same
    class with the highest IoU, if that IoU >= ``threshold``.

    iou: [N, M]; det_scores, det_labels: [N]; gt_labels: [M] -> [N] bool, in the input order.
    """
    allowed = (np.asarray(iou) >= threshold) & class_compatible(det_labels, gt_labels)
    return greedy_match(det_scores, iou, allowed) >= 0


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


def average_precision(scores: list[np.ndarray], tp: list[np.ndarray], num_gt: int) -> float:
    """AP over many frames: concatenate per-frame TP/FP lists, sort globally by score, VOC AP.

    scores, tp: one [N_i] array per frame (aligned); num_gt: ground truth over all frames.
    Ties in score keep frame order (stable sort). Returns NaN when num_gt == 0.
    """
    if len(scores) != len(tp):
        raise ValueError(f"scores and tp must list the same frames, got {len(scores)} and {len(tp)}")
    if num_gt == 0:
        return float("nan")
    all_scores = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores] + [np.zeros(0)])
    all_tp = np.concatenate([np.asarray(t, dtype=bool).reshape(-1) for t in tp] + [np.zeros(0, dtype=bool)])
    if all_scores.shape != all_tp.shape:
        raise ValueError(f"scores ({all_scores.shape[0]}) and tp ({all_tp.shape[0]}) lengths differ")
    order = np.argsort(-all_scores, kind="stable")
    return voc_average_precision(all_tp[order], num_gt)
