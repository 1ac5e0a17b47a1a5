"""Evaluation protocols as named presets: the rules that differ between the field's evaluation codes.

``EvalConfig.ap_protocol`` picks the detection-AP rules, ``EvalConfig.pred_protocol`` the prediction-metric
rules; docs/METRICS.md describes each in full.

- ``turbotrain`` (both; the default): the project's own rules, unchanged from earlier versions.
- ``opencood`` (AP): OpenCOOD / V2X-Real's ``eval_utils``: per frame and class, detections in
  ``np.argsort(-score)`` order (not stable) take the remaining ground truth of highest IoU, the IoU being
  float32 (shapely areas cast to float32); the TP/FP lists of all frames are concatenated in frame order
  **without** a global sort by score (OpenCOOD's default, ``global_sort_detections`` off); an evaluation range
  keeps boxes with all corners inside.
- ``vip3d`` (prediction): ViP3D's ``tools/prediction_eval.py``: detections scoring >= 0.35; one Hungarian
  assignment per frame on BEV centre distance, class-agnostic, pairs kept at <= ``pred_match_distance``;
  FDE only where the last horizon step is valid (EPA's ground truth and hits likewise); false positives only
  in frames with ground truth; means over nothing are 0.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class APRules:
    """How detection AP is computed."""

    name: str
    sort_kind: str
    """``np.argsort`` kind of the descending-score orders: ``stable`` (ties keep input order) or ``quicksort``."""
    global_sort: bool
    """Sort the TP/FP lists of all frames together by score (True) or concatenate them in frame order."""
    iou_float32: bool
    """Round IoU to float32 before comparing it with the threshold."""
    range_rule: str
    """``trainer.data.box_range`` rule of ``EvalConfig.range``."""


@dataclass(frozen=True)
class PredictionRules:
    """How detections are matched to ground truth and pooled for minADE / minFDE / MR / EPA."""

    name: str
    score_threshold: float
    """Detections scoring below this are ignored (``EvalConfig.pred_score_threshold`` overrides it)."""
    hungarian: bool
    """One optimal assignment minimising total centre distance (True) or greedy in score order."""
    class_aware: bool
    """A detection may only match ground truth of its own class."""
    fde_at_last_step: bool
    """FDE, hits and EPA's ground truth need the last horizon step valid (True), else the last valid step."""
    fp_only_with_gt: bool
    """Frames without ground truth contribute no false positives."""
    empty_is_zero: bool
    """Means over no object are 0 (and EPA with no ground truth is 0 when there are false positives)."""


AP_PROTOCOLS: dict[str, APRules] = {r.name: r for r in (
    APRules(name="turbotrain", sort_kind="stable", global_sort=True, iou_float32=False, range_rule="centre"),
    APRules(name="opencood", sort_kind="quicksort", global_sort=False, iou_float32=True, range_rule="all_corners"),
)}
PRED_PROTOCOLS: dict[str, PredictionRules] = {r.name: r for r in (
    PredictionRules(name="turbotrain", score_threshold=0.3, hungarian=False, class_aware=True, fde_at_last_step=False,
                    fp_only_with_gt=False, empty_is_zero=False),
    PredictionRules(name="vip3d", score_threshold=0.35, hungarian=True, class_aware=False, fde_at_last_step=True,
                    fp_only_with_gt=True, empty_is_zero=True),
)}
