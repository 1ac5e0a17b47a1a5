"""Plain-text rendering of the metrics dict for logs and the console."""

from __future__ import annotations

import math

_PREDICTION_KEYS = ("minADE", "minFDE", "MR", "EPA")
_COUNT_KEYS = ("num_frames", "num_gt", "num_det", "num_matched", "num_hits", "num_fp", "num_pred_gt")


def _cell(value: float | None, percent: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def format_table(metrics: dict[str, float]) -> str:
    """Render :func:`trainer.eval.summary.summarize_records` output as a small text table.

    AP and rate metrics (MR, EPA) are shown in percent, minADE / minFDE in metres. The ``mean of N`` row
    is the unweighted mean of the N per-class APs above it (the classes with ground truth). Keys it does not
    know are listed at the end unchanged, so nothing is hidden.
    """
    thresholds = sorted({key.split("/")[0][3:] for key in metrics if key.startswith("AP@")}, key=float)
    classes = list(dict.fromkeys(key.split("/", 1)[1] for key in metrics if key.startswith("AP@") and "/" in key))
    shown: set[str] = set()
    lines: list[str] = []
    if thresholds:
        header = ["AP (%)"] + [f"@{t}" for t in thresholds]
        rows = [[name] + [_cell(metrics.get(f"AP@{t}/{name}"), True) for t in thresholds] for name in classes]
        rows.append([f"mean of {len(classes)}"] + [_cell(metrics.get(f"AP@{t}"), True) for t in thresholds])
        widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
        for row in [header] + rows:
            lines.append("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)))
        shown |= {f"AP@{t}" for t in thresholds} | {f"AP@{t}/{c}" for t in thresholds for c in classes}
    ranged = [k for k in metrics if k.startswith("AP[") and "/" not in k]
    if ranged:  # AP by distance range (trainer.eval.distance): one line per range, mean over its classes
        bins = list(dict.fromkeys(k[3:k.index("]")] for k in ranged))
        for label in bins:
            cells = [f"@{k.split('@', 1)[1]} {_cell(metrics[k], True)}" for k in ranged if k[3:k.index("]")] == label]
            lines.append(f"AP {label} (%): " + "  ".join(cells))
        shown |= set(ranged)
    prediction = [k for k in _PREDICTION_KEYS if k in metrics]
    prediction += sorted(k for k in metrics if k.startswith("EPA/"))
    if prediction:
        rate = {k: k.startswith(("MR", "EPA")) for k in prediction}
        lines.append("  ".join(f"{k} {_cell(metrics[k], rate[k])}{'%' if rate[k] else ' m'}" for k in prediction))
        shown |= set(prediction)
    counts = [k for k in _COUNT_KEYS if k in metrics]
    if counts:
        lines.append("  ".join(f"{k}={int(metrics[k])}" for k in counts))
        shown |= set(counts)
    rest = sorted(k for k in metrics if k not in shown)
    lines += [f"{k} = {metrics[k]}" for k in rest]
    return "\n".join(lines)
