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


def _ap_table(metrics: dict[str, float], prefix: str, shown: set[str]) -> list[str]:
    """Lines of the AP table of keys ``<prefix>@<t>[/<class>]`` (classes x thresholds, then the mean row);
    the keys drawn are added to ``shown``."""
    keys = [key for key in metrics if key.startswith(f"{prefix}@")]
    thresholds = sorted({key.split("/")[0][len(prefix) + 1:] for key in keys}, key=float)
    classes = list(dict.fromkeys(key.split("/", 1)[1] for key in keys if "/" in key))
    if not thresholds:
        return []
    header = [f"{prefix} (%)".replace("[", " ").replace("]", "")] + [f"@{t}" for t in thresholds]
    rows = [[name] + [_cell(metrics.get(f"{prefix}@{t}/{name}"), True) for t in thresholds] for name in classes]
    rows.append([f"mean of {len(classes)}"] + [_cell(metrics.get(f"{prefix}@{t}"), True) for t in thresholds])
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    shown |= {f"{prefix}@{t}" for t in thresholds} | {f"{prefix}@{t}/{c}" for t in thresholds for c in classes}
    return ["  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)) for row in [header] + rows]


def format_table(metrics: dict[str, float]) -> str:
    """Render :func:`trainer.eval.summary.summarize_records` output as a small text table.

    AP and rate metrics (MR, EPA) are shown in percent, minADE / minFDE in metres. The ``mean of N`` row
    is the unweighted mean of the N per-class APs above it (the classes with ground truth); AP by distance
    range gets one such table per range. Keys it does not
    know are listed at the end unchanged, so nothing is hidden.
    """
    shown: set[str] = set()
    lines: list[str] = []
    # the overall AP table, then one per distance range (trainer.eval.distance: keys AP[<range>]@<t>)
    for prefix in ["AP"] + list(dict.fromkeys(k.split("@", 1)[0] for k in metrics if k.startswith("AP["))):
        lines += _ap_table(metrics, prefix, shown)
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
