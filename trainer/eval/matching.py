"""Greedy score-ordered matching of detections to ground truth (OpenCOOD convention)."""

from __future__ import annotations

import numpy as np


def greedy_match(scores: np.ndarray, affinity: np.ndarray, allowed: np.ndarray, *,
                 sort_kind: str = "stable") -> np.ndarray:
    """Match detections to ground truth greedily, highest score first.

    Each detection in descending score order (``np.argsort`` ``sort_kind``: ``stable`` keeps input order on
    ties) takes the still-unmatched
    ground truth with the highest ``affinity`` among those ``allowed`` for it, or stays unmatched.

    scores: [N]; affinity: [N, M] (higher is better, e.g. IoU or minus centre distance);
    allowed: [N, M] bool (threshold passed and same class) -> [N] int64 matched GT index, -1 if none.
    """
    scores, affinity, allowed = np.asarray(scores), np.asarray(affinity), np.asarray(allowed, dtype=bool)
    if scores.ndim != 1 or affinity.ndim != 2 or affinity.shape[0] != scores.shape[0]:
        raise ValueError(f"scores must be [N] and affinity [N, M], got {scores.shape} and {affinity.shape}")
    if allowed.shape != affinity.shape:
        raise ValueError(f"allowed must have affinity's shape {affinity.shape}, got {allowed.shape}")
    matched = np.full(scores.shape[0], -1, dtype=np.int64)
    if affinity.shape[1] == 0:
        return matched
    free = np.ones(affinity.shape[1], dtype=bool)
    for det in np.argsort(-scores, kind=sort_kind):
        candidates = allowed[det] & free
        if not candidates.any():
            continue
        gt = int(np.argmax(np.where(candidates, affinity[det], -np.inf)))
        matched[det] = gt
        free[gt] = False
    return matched


def class_compatible(det_labels: np.ndarray, gt_labels: np.ndarray) -> np.ndarray:
    """[N] and [M] class indices -> [N, M] bool, True where the classes agree."""
    return np.asarray(det_labels)[:, None] == np.asarray(gt_labels)[None, :]


def hungarian_match(distance: np.ndarray, max_distance: float) -> np.ndarray:
    """ViP3D's assignment: one optimal assignment of detections to ground truth on ``distance``, pairs farther
    than ``max_distance`` costing 10000 (so the most pairs within it win), then pairs farther dropped.

    distance: [N, M] metres -> [N] int64 matched GT index, -1 if none.
    """
    from scipy.optimize import linear_sum_assignment

    distance = np.asarray(distance, dtype=np.float64)
    matched = np.full(distance.shape[0], -1, dtype=np.int64)
    if distance.size == 0:
        return matched
    cost = np.where(distance > max_distance, 10000.0, distance)
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] <= max_distance
    matched[rows[keep]] = cols[keep]
    return matched
