"""Greedy score-ordered matching of detections to ground truth (OpenCOOD convention)."""

from __future__ import annotations

import numpy as np


def greedy_match(scores: np.ndarray, affinity: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Match detections to ground truth greedily, highest score first.

    Each detection in descending score order (ties keep input order) takes the still-unmatched
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
    for det in np.argsort(-scores, kind="stable"):
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
