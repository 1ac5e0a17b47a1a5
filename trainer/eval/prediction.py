"""Trajectory prediction metrics on matched objects: minADE, minFDE, miss rate and EPA (ViP3D)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def min_ade_fde(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-K displacement errors of matched objects.

    ADE of a mode is its mean L2 error over the valid future steps; FDE is its L2 error at the last
    valid step. minADE and minFDE are minimised over the K modes independently.

    pred: [P, K, T_f, 2]; gt: [P, T_f, 2]; valid: [P, T_f] bool with >= 1 valid step per object
    -> (min_ade [P], min_fde [P]) metres.
    """
    pred, gt, valid = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(valid, bool)
    if pred.ndim != 4 or pred.shape[-1] != 2 or gt.shape != (pred.shape[0], pred.shape[2], 2):
        raise ValueError(f"pred must be [P, K, T_f, 2] and gt [P, T_f, 2], got {pred.shape} and {gt.shape}")
    if valid.shape != gt.shape[:2]:
        raise ValueError(f"valid must be [P, T_f] = {gt.shape[:2]}, got {valid.shape}")
    if not valid.any(axis=1).all():
        raise ValueError("every matched object needs at least one valid future step")
    if pred.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    error = np.linalg.norm(pred - gt[:, None], axis=-1)  # [P, K, T_f]
    steps = valid.sum(axis=1)  # [P]
    ade = (error * valid[:, None]).sum(axis=-1) / steps[:, None]  # [P, K]
    last = valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)  # [P] last valid step
    fde = np.take_along_axis(error, last[:, None, None].repeat(error.shape[1], axis=1), axis=2)[..., 0]
    return ade.min(axis=1), fde.min(axis=1)


@dataclass(kw_only=True)
class PredictionSummary:
    """Pooled prediction metrics and the counts they come from."""

    min_ade: float
    """Mean minADE over matched objects (NaN with none)."""
    min_fde: float
    """Mean minFDE over matched objects (NaN with none)."""
    miss_rate: float
    """Fraction of matched objects with minFDE > miss threshold (NaN with none)."""
    epa: float
    """max(0, (hits - w * FP) / N_GT) (NaN when N_GT == 0)."""
    num_matched: int
    """Matched (detection, ground truth with a valid future) pairs."""
    num_hits: int
    """Matched objects with minFDE <= miss threshold."""
    num_fp: int
    """Detections above the score threshold matched to no ground truth."""
    num_gt: int
    """Ground-truth objects with at least one valid future step."""


def summarize_prediction(
    min_ade: np.ndarray, min_fde: np.ndarray, num_fp: int, num_gt: int, *, miss_threshold: float, fp_weight: float
) -> PredictionSummary:
    """Pool per-object errors into minADE / minFDE / MR / EPA.

    min_ade, min_fde: [P] errors of all matched objects; num_fp: unmatched detections; num_gt: ground
    truth objects eligible for prediction (hits are counted among them, so P <= num_gt).
    """
    min_ade, min_fde = np.asarray(min_ade, np.float64), np.asarray(min_fde, np.float64)
    if min_ade.shape != min_fde.shape or min_ade.ndim != 1:
        raise ValueError(f"min_ade and min_fde must be equal-length 1-D, got {min_ade.shape} and {min_fde.shape}")
    if num_fp < 0 or num_gt < min_ade.shape[0]:
        raise ValueError(f"need num_fp >= 0 and num_gt >= matched ({min_ade.shape[0]}), got {num_fp}, {num_gt}")
    matched = int(min_ade.shape[0])
    hits = int((min_fde <= miss_threshold).sum())
    nan = float("nan")
    return PredictionSummary(
        min_ade=float(min_ade.mean()) if matched else nan,
        min_fde=float(min_fde.mean()) if matched else nan,
        miss_rate=float((min_fde > miss_threshold).mean()) if matched else nan,
        epa=max(0.0, (hits - fp_weight * num_fp) / num_gt) if num_gt else nan,
        num_matched=matched,
        num_hits=hits,
        num_fp=int(num_fp),
        num_gt=int(num_gt),
    )
