"""Pool per-frame records into the flat metrics dict (AP per class and mean, minADE/minFDE/MR/EPA)."""

from __future__ import annotations

import numpy as np

from trainer.eval.ap import average_precision
from trainer.eval.config import EvalConfig
from trainer.eval.distance import summarize_distance_ap
from trainer.eval.prediction import summarize_prediction
from trainer.eval.records import FrameRecord


def ap_key(threshold: float, class_name: str | None = None) -> str:
    """Metric name of AP at ``threshold``: "AP@0.5" (mean) or "AP@0.5/<class>"."""
    return f"AP@{threshold:g}" if class_name is None else f"AP@{threshold:g}/{class_name}"


def _concat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype).reshape(-1) for a in arrays] + [np.zeros(0, dtype)])


def summarize_records(records: list[FrameRecord], config: EvalConfig) -> dict[str, float]:
    """Metrics over ``records`` (each frame once, in a fixed order; ties in score keep this order).

    Returns ``AP@<t>`` (mean over classes that have ground truth; NaN if none) and ``AP@<t>/<class>``
    for every IoU threshold t and class with ground truth; ``minADE``, ``minFDE``, ``MR``, ``EPA``
    pooled over classes and ``EPA/<class>`` per class with prediction ground truth; and the counts
    ``num_frames``, ``num_gt``, ``num_det``, ``num_matched``, ``num_hits``, ``num_fp``, ``num_pred_gt``.
    """
    metrics: dict[str, float] = {}
    gt_labels = _concat([r.gt_labels for r in records], np.int64)
    for t_index, threshold in enumerate(config.iou_thresholds):
        class_aps = []
        for c, name in enumerate(config.class_names):
            num_gt = int((gt_labels == c).sum())
            if num_gt == 0:
                continue
            picks = [r.det_labels == c for r in records]
            ap = average_precision(
                [r.det_scores[p] for r, p in zip(records, picks)],
                [r.det_tp[t_index][p] for r, p in zip(records, picks)],
                num_gt, global_sort=config.ap_rules.global_sort, sort_kind=config.ap_rules.sort_kind,
            )
            metrics[ap_key(threshold, name)] = ap
            class_aps.append(ap)
        metrics[ap_key(threshold)] = float(np.mean(class_aps)) if class_aps else float("nan")

    pred_labels = _concat([r.pred_labels for r in records], np.int64)
    min_ade = _concat([r.pred_min_ade for r in records], np.float64)
    min_fde = _concat([r.pred_min_fde for r in records], np.float64)
    fp_labels = _concat([r.pred_fp_labels for r in records], np.int64)
    pred_gt_labels = _concat([r.pred_gt_labels for r in records], np.int64)
    empty_is_zero = config.pred_rules.empty_is_zero
    pooled = summarize_prediction(
        min_ade, min_fde, int(fp_labels.size), int(pred_gt_labels.size),
        miss_threshold=config.miss_threshold, fp_weight=config.epa_fp_weight, empty_is_zero=empty_is_zero,
    )
    metrics.update(minADE=pooled.min_ade, minFDE=pooled.min_fde, MR=pooled.miss_rate, EPA=pooled.epa)
    for c, name in enumerate(config.class_names):
        num_pred_gt = int((pred_gt_labels == c).sum())
        if num_pred_gt == 0:
            continue
        pick = pred_labels == c
        per_class = summarize_prediction(
            min_ade[pick], min_fde[pick], int((fp_labels == c).sum()), num_pred_gt,
            miss_threshold=config.miss_threshold, fp_weight=config.epa_fp_weight, empty_is_zero=empty_is_zero,
        )
        metrics[f"EPA/{name}"] = per_class.epa
    metrics.update(summarize_distance_ap(records, config))
    metrics.update(
        num_frames=len(records),
        num_gt=int(gt_labels.size),
        num_det=int(sum(r.det_scores.size for r in records)),
        num_matched=pooled.num_matched,
        num_hits=pooled.num_hits,
        num_fp=pooled.num_fp,
        num_pred_gt=pooled.num_gt,
    )
    return metrics
