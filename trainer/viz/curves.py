"""Training curves from a run directory's ``metrics.jsonl`` (losses, learning rate, eval metrics)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from trainer.engine.metrics_log import read_metrics

NON_SERIES_KEYS = ("step", "stage", "epoch", "time", "wall_time")
"""Record keys that are never plotted as curves."""
PANELS = (("loss/", "loss"), ("lr", "learning rate"), ("eval/AP", "detection AP"),
          (("eval/EPA", "eval/MR"), "prediction rates (EPA, MR)"), (("eval/minADE", "eval/minFDE"), "prediction error (m)"),
          ("eval/num_", "evaluation counts"), ("eval/comm/", "communication (bytes)"), ("balance/", "balancer"),
          ("samples_per_s", "throughput (samples/s)"), ("grad_norm", "gradient norm"),
          ("pretrain/recon_cells", "reconstructed cells"))
"""(key prefix or prefixes, panel title) in drawing order: one panel per quantity of one scale; other
numeric keys go to a last "other" panel."""


def _as_number(value: Any) -> float | None:
    """Numbers (and the "nan" / "inf" strings metrics_log writes for non-finite floats) -> float."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return None


def stage_offsets(records: list[dict[str, Any]]) -> dict[str, float]:
    """Stage -> steps of all earlier stages, so that the stages follow each other on one step axis
    (each stage's ``step`` counts from 0)."""
    offsets: dict[str, float] = {}
    total = 0.0
    for record in records:
        stage = record.get("stage")
        step = _as_number(record.get("step"))
        if stage is None or step is None:
            continue
        stage = str(stage)
        if stage not in offsets:
            offsets[stage] = total
        total = max(total, offsets[stage] + step)
    return offsets


def _global_step(record: dict[str, Any], index: int, offsets: dict[str, float]) -> float:
    step = _as_number(record.get("step", index))
    step = float(index) if step is None else step
    return step + offsets.get(str(record.get("stage")), 0.0)


def metric_series(records: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every numeric key -> (steps [S], values [S]); a record's x is its ``step`` (else its index) plus
    the steps of the stages before its own (``stage_offsets``)."""
    offsets = stage_offsets(records)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for index, record in enumerate(records):
        step = _global_step(record, index, offsets)
        for key, value in record.items():
            number = _as_number(value)
            if key in NON_SERIES_KEYS or number is None:
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(step)
            ys.append(number)
    return {key: (np.asarray(xs), np.asarray(ys)) for key, (xs, ys) in series.items()}


def stage_changes(records: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """(global step, stage) where the ``stage`` field takes a new value, the first record's stage included."""
    offsets = stage_offsets(records)
    changes: list[tuple[float, str]] = []
    for index, record in enumerate(records):
        if "stage" not in record:
            continue
        stage = str(record["stage"])
        if not changes or changes[-1][1] != stage:
            changes.append((offsets[stage] if stage in offsets else _global_step(record, index, offsets), stage))
    return changes


def panel_of(key: str) -> str:
    for prefix, title in PANELS:
        if key.startswith(prefix):  # str.startswith takes a tuple of prefixes too
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
    ax.set_xlabel("step (stages one after another)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def plot_training_curves(run: str | Path, out_path: str | Path | None = None) -> Path:
    """Plot ``<run>/metrics.jsonl`` (or a metrics file given directly) to a PNG; returns its path.

    One panel per scale (``PANELS``: losses, learning rate, AP, EPA/MR, metres, counts, ...), legends
    outside the plots, the stages one after another on one step axis, marked by vertical lines. Default output: ``curves.png`` next to the metrics file.
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
        grouped.setdefault(panel_of(key), {})[key] = xy
    order = [title for _, title in PANELS if title in grouped] + (["other"] if "other" in grouped else [])
    columns = min(2, len(order))
    rows = math.ceil(len(order) / columns)
    fig = Figure(figsize=(7.5 * columns, 3.6 * rows), dpi=100, layout="constrained")
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
