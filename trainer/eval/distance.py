"""Detection AP by distance range (``EvalConfig.distance_bins``), e.g. 0-30, 30-50 and 50+ m.

A box's distance is the norm of its BEV centre in the ego frame. Detections and ground truth each fall
into the bin of their own distance (below the first edge: none) and are matched only within their bin,
so a bin's AP is that of the objects at that distance, as range-wise evaluations of cooperative
perception report it. Keys: ``AP[<bin>]@<t>`` (mean over the classes with ground truth in the bin) and
``AP[<bin>]@<t>/<class>``, with ``<bin>`` like ``0-30m`` or ``50m+``.
"""

from __future__ import annotations

import numpy as np

from trainer.eval.ap import average_precision


def bin_labels(edges: list[float]) -> list[str]:
    """``[0, 30, 50]`` -> ``["0-30m", "30-50m", "50m+"]``."""
    edges = [float(e) for e in edges]
    return [f"{a:g}-{b:g}m" for a, b in zip(edges, edges[1:])] + ([f"{edges[-1]:g}m+"] if edges else [])


def distance_bins(boxes: np.ndarray, edges: list[float]) -> np.ndarray:
    """[N] bin index of boxes ``[N, 7]`` (ego BEV frame) by ``edges``; -1 below the first edge."""
    dist = np.hypot(np.asarray(boxes, dtype=np.float64)[:, 0], np.asarray(boxes, dtype=np.float64)[:, 1])
    if not len(edges):
        return np.full(dist.shape[0], -1, dtype=np.int64)
    return np.searchsorted(np.asarray(edges, dtype=np.float64), dist, side="right").astype(np.int64) - 1


def range_ap_key(label: str, threshold: float, class_name: str | None = None) -> str:
    """``AP[0-30m]@0.5`` or ``AP[0-30m]@0.5/vehicle``."""
    return f"AP[{label}]@{threshold:g}" + (f"/{class_name}" if class_name else "")


def summarize_distance_ap(records: list, config) -> dict[str, float]:
    """AP per distance bin, threshold and class (with ground truth there), and the mean over those classes."""
    metrics: dict[str, float] = {}
    rules = config.ap_rules
    for b, label in enumerate(bin_labels(config.distance_bins)):
        for t_index, threshold in enumerate(config.iou_thresholds):
            class_aps = []
            for c, name in enumerate(config.class_names):
                num_gt = int(sum(((r.gt_labels == c) & (r.gt_bins == b)).sum() for r in records))
                if num_gt == 0:
                    continue
                picks = [(r.det_labels == c) & (r.det_bins == b) for r in records]
                ap = average_precision([r.det_scores[p] for r, p in zip(records, picks)],
                                       [r.det_tp_binned[t_index][p] for r, p in zip(records, picks)], num_gt,
                                       global_sort=rules.global_sort, sort_kind=rules.sort_kind)
                metrics[range_ap_key(label, threshold, name)] = ap
                class_aps.append(ap)
            metrics[range_ap_key(label, threshold)] = float(np.mean(class_aps)) if class_aps else float("nan")
    return metrics
