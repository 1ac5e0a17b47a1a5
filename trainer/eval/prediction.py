"""Trajectory prediction metrics on matched objects: minADE, minFDE, miss rate and EPA (ViP3D)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def min_ade_fde(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, *,
                fde_at_last_step: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-K displacement errors of matched objects.

    ADE of a mode is its mean L2 error over the valid future steps; FDE is its L2 error at the last
    valid step (``fde_at_last_step``: at the last horizon step, NaN where that step is not valid, as ViP3D).
    minADE and minFDE are minimised over the K modes independently.

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
    if fde_at_last_step:
        return ade.min(axis=1), np.where(valid[:, -1], error[:, :, -1].min(axis=1), np.nan)
    last = valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)  # [P] last valid step
    fde = np.take_along_axis(error, last[:, None, None].repeat(error.shape[1], axis=1), axis=2)[..., 0]
    return ade.min(axis=1), fde.min(axis=1)


@dataclass(kw_only=True)
class PredictionSummary:
    """Pooled prediction metrics and the counts they come from."""

    min_ade: float
    """Mean minADE over matched objects (NaN with none, or 0 with ``empty_is_zero``)."""
    min_fde: float
    """Mean minFDE over matched objects with an FDE (NaN / 0 with none)."""
    miss_rate: float
    """Fraction of matched objects with an FDE > miss threshold (NaN / 0 with none)."""
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
    min_ade: np.ndarray, min_fde: np.ndarray, num_fp: int, num_gt: int, *, miss_threshold: float, fp_weight: float,
    empty_is_zero: bool = False,
) -> PredictionSummary:
    """Pool per-object errors into minADE / minFDE / MR / EPA.

    min_ade, min_fde: [P] errors of all matched objects (minFDE NaN where an object has no FDE: it then
    counts for minADE only); num_fp: unmatched detections; num_gt: ground truth objects eligible for EPA
    (hits are counted among them). ``empty_is_zero``: a mean over no object is 0, and EPA with num_gt 0 is 0
    when there are false positives (ViP3D: max(0, -FP / 0)), else NaN.
    """
    min_ade, min_fde = np.asarray(min_ade, np.float64), np.asarray(min_fde, np.float64)
    if min_ade.shape != min_fde.shape or min_ade.ndim != 1:
        raise ValueError(f"min_ade and min_fde must be equal-length 1-D, got {min_ade.shape} and {min_fde.shape}")
    has_fde = ~np.isnan(min_fde)
    hits = int((min_fde[has_fde] <= miss_threshold).sum())
    if num_fp < 0 or num_gt < hits:
        raise ValueError(f"need num_fp >= 0 and num_gt >= hits ({hits}), got {num_fp}, {num_gt}")
    matched = int(min_ade.shape[0])
    empty = 0.0 if empty_is_zero else float("nan")
    fde = min_fde[has_fde]
    no_gt_epa = 0.0 if empty_is_zero and num_fp else float("nan")
    return PredictionSummary(
        min_ade=float(min_ade.mean()) if matched else empty,
        min_fde=float(fde.mean()) if fde.size else empty,
        miss_rate=float((fde > miss_threshold).mean()) if fde.size else empty,
        epa=max(0.0, (hits - fp_weight * num_fp) / num_gt) if num_gt else no_gt_epa,
        num_matched=matched,
        num_hits=hits,
        num_fp=int(num_fp),
        num_gt=int(num_gt),
    )
