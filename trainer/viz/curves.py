"""Training curves from a run directory's ``metrics.jsonl`` (losses, learning rate, eval metrics)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from trainer.metrics_log import read_metrics

NON_SERIES_KEYS = ("step", "stage", "epoch", "time", "wall_time")
"""Record keys that are never plotted as curves."""
PANELS = (("loss/", "loss"), ("lr", "learning rate"), ("eval/", "evaluation"))
"""(key prefix, panel title) in drawing order; other numeric keys go to a last "other" panel."""


def _as_number(value: Any) -> float | None:
    """Numbers (and the "nan" / "inf" strings metrics_log writes for non-finite floats) -> float."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return None


def metric_series(records: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every numeric key -> (steps [S], values [S]); a record's x is its ``step`` (else its index)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for index, record in enumerate(records):
        step = _as_number(record.get("step", index))
        step = float(index) if step is None else step
        for key, value in record.items():
            number = _as_number(value)
            if key in NON_SERIES_KEYS or number is None:
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(step)
            ys.append(number)
    return {key: (np.asarray(xs), np.asarray(ys)) for key, (xs, ys) in series.items()}


def stage_changes(records: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """(step, stage) where the ``stage`` field takes a new value, the first record's stage included."""
    changes: list[tuple[float, str]] = []
    for index, record in enumerate(records):
        if "stage" not in record:
            continue
        stage = str(record["stage"])
        if not changes or changes[-1][1] != stage:
            step = _as_number(record.get("step", index))
            changes.append((float(index) if step is None else step, stage))
    return changes


def _panel_of(key: str) -> str:
    for prefix, title in PANELS:
        if key.startswith(prefix):
            return title
    return "other"


def _draw_panel(ax: Axes, title: str, series: dict[str, tuple[np.ndarray, np.ndarray]],
                stages: list[tuple[float, str]]) -> None:
    for key in sorted(series):
        steps, values = series[key]
        finite = np.isfinite(values)
        ax.plot(steps[finite], values[finite], marker="." if finite.sum() < 30 else None, linewidth=1.2, label=key)
    positive = all((v[np.isfinite(v)] > 0).all() and np.isfinite(v).any() for _, v in series.values())
    if title in ("loss", "learning rate") and positive:
        ax.set_yscale("log")
    for step, stage in stages:
        ax.axvline(step, color="grey", linestyle=":", linewidth=1)
        ax.text(step, 1.0, f" {stage}", transform=ax.get_xaxis_transform(), fontsize=7, va="top", color="grey")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")


def plot_training_curves(run: str | Path, out_path: str | Path | None = None) -> Path:
    """Plot ``<run>/metrics.jsonl`` (or a metrics file given directly) to a PNG; returns its path.

    Panels: losses (``loss/*``), learning rate (``lr*``), eval metrics (``eval/*``), other numeric keys;
    vertical lines mark stage changes. Default output: ``curves.png`` next to the metrics file.
    """
    run = Path(run)
    metrics_path = run / "metrics.jsonl" if run.is_dir() else run
    if not metrics_path.is_file():
        raise FileNotFoundError(f"no metrics file at {metrics_path} (expected a run directory with metrics.jsonl)")
    records = read_metrics(metrics_path)
    series = metric_series(records)
    if not series:
        raise ValueError(f"{metrics_path} holds no numeric metrics to plot ({len(records)} records)")
    grouped: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for key, xy in series.items():
        grouped.setdefault(_panel_of(key), {})[key] = xy
    order = [title for _, title in PANELS if title in grouped] + (["other"] if "other" in grouped else [])
    columns = min(2, len(order))
    rows = math.ceil(len(order) / columns)
    fig = Figure(figsize=(6 * columns, 3.6 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    stages = stage_changes(records)
    for ax, title in zip(axes, order):
        _draw_panel(ax, title, grouped[title], stages)
    for ax in axes[len(order):]:
        ax.set_axis_off()
    fig.suptitle(str(metrics_path.parent.name or metrics_path), fontsize=10)
    out = metrics_path.parent / "curves.png" if out_path is None else Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
