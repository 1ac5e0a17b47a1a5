"""Tables and plots of ``bench/time_to_quality.py``, compiled from run records (``bench.ttq_records.run_record``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.common import machine_info, markdown_table, median_and_spread
from bench.ttq_records import HEADLINE, compare

NAMES = {"a": "manual_4stage", "b": "joint_scratch", "c": "turbotrain_sum", "d": "turbotrain"}
COLORS = {"a": "tab:gray", "b": "tab:orange", "c": "tab:blue", "d": "tab:green"}
FINAL_COLUMNS = ("AP@0.5/vehicle", "AP@0.5", "EPA", "minADE")
GOAL_RATIO = 0.5
"""Issue 19's goal: (d) reaches (a)'s final AP@0.5 and EPA in at most this share of (a)'s training time."""


def spread(values: list[float | None], digits: int = 3) -> str:
    """``median [min, max]`` of the finite values (just the value when there is one; '-' when none)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return "-"
    med, lo, hi = median_and_spread(finite)
    return f"{med:.{digits}f}" if lo == hi else f"{med:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def finals_table(runs: list[dict[str, Any]]) -> str:
    rows = []
    for key, name in NAMES.items():
        mine = [r for r in runs if r["recipe"] == key]
        if mine:
            rows.append([f"({key}) {name}", ", ".join(str(r["seed"]) for r in mine),
                         spread([r["steps"] for r in mine], 0), spread([r["train_time_s"] for r in mine], 0),
                         spread([r["wall_time_s"] for r in mine], 0),
                         *[spread([r["final"].get(m, math.nan) for r in mine]) for m in FINAL_COLUMNS]])
    return markdown_table(["recipe", "seeds", "steps", "train time (s)", "wall (s)", "vehicle AP@0.5", "mean AP@0.5",
                           "EPA", "minADE (m)"], rows)


def ratio_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for key in ("b", "c", "d"):
        mine = [r for r in rows if r["recipe"] == key]
        if mine:
            out.append([f"({key}) {NAMES[key]}", f"{sum(r['ratio_both'] is not None for r in mine)}/{len(mine)}",
                        spread([r["ratio_both"] for r in mine]), spread([r["step_ratio_both"] for r in mine]),
                        spread([r["ratio_AP@0.5"] for r in mine]), spread([r["ratio_EPA"] for r in mine]),
                        spread([r["total_time_ratio"] for r in mine]),
                        f"{sum(r['final_at_least_reference'] for r in mine)}/{len(mine)}"])
    return markdown_table(["recipe", "reached (a)'s final", "time ratio (both)", "step ratio (both)",
                           "time ratio (AP@0.5)", "time ratio (EPA)", "total time ratio",
                           "final AP@0.5 and EPA >= (a)"], out)


def stage_table(runs: list[dict[str, Any]]) -> str:
    rows = []
    for run in runs:
        for stage in run["stages"]:
            end = stage.get("end") or {}
            rows.append([f"({run['recipe']}) {run['name']}", run["seed"], stage["stage"], stage["steps"],
                         stage["train_time_s"], stage["s_per_step"], end.get("reason", "-"),
                         end.get("message", "-")])
    return markdown_table(["recipe", "seed", "stage", "steps", "train time (s)", "s per step", "end", "why"], rows)


def conflict_table(runs: list[dict[str, Any]]) -> str:
    """Median balancer cosine and conflict fraction in each half of the fine-tuning, per run of (c) and (d)."""
    rows = []
    for run in runs:
        trace = run.get("balancer") or []
        if not trace:
            continue
        half = len(trace) // 2
        parts = (trace[:half] or trace, trace[half:])
        rows.append([f"({run['recipe']}) {run['name']}", run["seed"], len(trace),
                     *[spread([p["cosine"] for p in part]) for part in parts],
                     *[spread([p["conflict_fraction"] for p in part]) for part in parts],
                     run["final"].get("AP@0.5", math.nan), run["final"].get("EPA", math.nan)])
    return markdown_table(["recipe", "seed", "log points", "cosine (1st half)", "cosine (2nd half)",
                           "conflict fraction (1st half)", "conflict fraction (2nd half)", "final AP@0.5",
                           "final EPA"], rows)


def label_table(runs: list[dict[str, Any]]) -> str:
    """Final quality of (b) and (d) per share of the labelled scenarios (the 100% rows are the main runs)."""
    rows = []
    for share in sorted({r.get("label_share", 1.0) for r in runs}):
        for key in ("b", "d"):
            mine = [r for r in runs if r["recipe"] == key and r.get("label_share", 1.0) == share]
            if mine:
                rows.append([f"{share:.0%}", f"({key}) {NAMES[key]}", ", ".join(str(r["seed"]) for r in mine),
                             *[spread([r["final"].get(m, math.nan) for r in mine]) for m in FINAL_COLUMNS],
                             spread([r["train_time_s"] for r in mine], 0)])
    return markdown_table(["labelled scenarios", "recipe", "seeds", "vehicle AP@0.5", "mean AP@0.5", "EPA",
                           "minADE (m)", "train time (s)"], rows)


def headline(rows: list[dict[str, Any]]) -> str:
    mine = [r for r in rows if r["recipe"] == "d"]
    if not mine:
        return "headline: no (d) run with an (a) run of the same seed yet"
    reached = sum(r["ratio_both"] is not None for r in mine)
    return (f"headline: (d) turbotrain reaches (a)'s final AP@0.5 and EPA in {spread([r['ratio_both'] for r in mine])} "
            f"of (a)'s training time ({reached}/{len(mine)} seeds reached; goal <= {GOAL_RATIO}); its final AP@0.5 "
            f"and EPA are at least (a)'s in {sum(r['final_at_least_reference'] for r in mine)}/{len(mine)} seeds")


def plot_curves(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("AP@0.5", "EPA", "minADE", "AP@0.5/vehicle")
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, metric in zip(axes.ravel(), metrics):
        labelled = set()
        for run in runs:
            key = run["recipe"]
            label = None if key in labelled else f"({key}) {run['name']}"
            labelled.add(key)
            ax.plot([p["train_time_s"] / 60 for p in run["curve"]], [p[metric] for p in run["curve"]], marker=".",
                    color=COLORS[key], label=label, alpha=0.85)
        ax.set_xlabel("training wall-clock (min, evaluations excluded)")
        ax.set_title(metric + (" (m, lower is better)" if metric == "minADE" else ""))
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_conflict(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    labelled = set()
    for run in runs:
        trace, key = run.get("balancer") or [], run["recipe"]
        if not trace:
            continue
        label = None if key in labelled else f"({key}) {run['name']}"
        labelled.add(key)
        steps = [p["global_step"] for p in trace]
        axes[0].plot(steps, [p["cosine"] for p in trace], color=COLORS[key], alpha=0.7, label=label)
        axes[1].plot(steps, [p["conflict_fraction"] for p in trace], color=COLORS[key], alpha=0.7)
    axes[0].set_title("cosine between the detection and prediction gradients on Z")
    axes[1].set_title("fraction of samples whose task gradients conflict")
    for ax in axes:
        ax.set_xlabel("global optimizer step")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(runs: list[dict[str, Any]], out: Path, *, command: str) -> str:
    """Write ``time_to_quality.{json,md}`` and the plots into ``out``; returns the markdown (its last line is the
    headline)."""
    labelled = [r for r in runs if r.get("label_share", 1.0) != 1.0]
    runs = [r for r in runs if r.get("label_share", 1.0) == 1.0]
    rows = compare(runs)
    label_text = (f"Label efficiency: (b) and (d) fine-tuned on a share of the labelled training scenarios ((d)'s "
                  f"pretraining, and its time, is that of its 100% run of the same seed, which saw every "
                  f"scenario):\n\n{label_table(runs + labelled)}\n\n") if labelled else ""
    text = (f"Command: `{command}`. Compiled from the {len(runs)} run records in `time_to_quality/runs/` beside "
            f"this file. Medians [min, max] over seeds.\n\n"
            f"Final quality on the held-out validation split, and the cost of each recipe:\n\n{finals_table(runs)}\n\n"
            f"Training time (evaluations excluded) that (b), (c), (d) need to reach the same seed's (a) final "
            f"{' and '.join(HEADLINE)}, as a ratio of (a)'s total training time; the step ratio is the same in "
            f"optimizer steps; '-' = never reached:\n\n{ratio_table(rows)}\n\n"
            f"Where the time goes: every stage's steps, training time and automatic end:\n\n{stage_table(runs)}\n\n"
            f"Gradient conflict during fine-tuning (the balancer's statistics, logged for (c) and (d)):\n\n"
            f"{conflict_table(runs)}\n\n{label_text}{headline(rows)}\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "time_to_quality.md").write_text(text)
    (out / "time_to_quality.json").write_text(json.dumps(
        {"command": command, "machine": machine_info(), "comparison": rows,
         "runs": [{k: v for k, v in r.items() if k not in ("curve", "balancer")} for r in runs + labelled]},
        indent=1))
    plot_curves(runs, out / "time_to_quality.png")
    plot_conflict(runs, out / "time_to_quality_conflict.png")
    return text
