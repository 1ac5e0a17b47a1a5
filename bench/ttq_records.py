"""The pure parts of ``bench/time_to_quality.py``: a run's metrics.jsonl on one training clock, its quality curve,
its stages, its balancer statistics, the record a finished run leaves, and the comparison across recipes.

A record is plain JSON (``run_record``); tables and plots are compiled from records alone, so runs finished in
different sessions add up.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

CURVE_METRICS = ("AP@0.5", "AP@0.5/vehicle", "EPA", "minADE", "AP@0.3", "MR", "hit_rate")
"""Reported per supervised evaluation. ``hit_rate`` = EPA's numerator without its false-positive penalty: ground
truth objects detected and predicted within the miss threshold, over EPA's N_GT."""
BALANCE_KEYS = ("balance/cosine", "balance/conflict_fraction", "balance/norm_ratio")
"""The balancer statistics a multitask stage logs (``models.balancer.stats``)."""
HEADLINE = ("AP@0.5", "EPA")
"""What (d) must reach of (a): the paper's two headline metrics."""


def _num(value: Any) -> float:
    return float(value) if value is not None else math.nan


def eval_metrics(record: dict[str, Any]) -> dict[str, float]:
    """``CURVE_METRICS`` of one evaluation record of metrics.jsonl (NaN where absent)."""
    out = {m: _num(record.get(f"eval/{m}")) for m in CURVE_METRICS if m != "hit_rate"}
    hits, n_gt = record.get("eval/num_hits"), record.get("eval/num_pred_gt")
    out["hit_rate"] = hits / n_gt if hits is not None and n_gt else math.nan
    return out


def timeline(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every metrics.jsonl record placed on one clock: its stage, its global step (steps of earlier stages
    added), its wall time (continued across resumed processes) and its *training* time (wall time minus the
    evaluations before it, this one included). An evaluation's duration is its record's ``time`` minus the
    previous record's ``time`` (the training log of the same step: run with ``loop.log_every`` dividing the
    evaluation period). Event records (``"event"``) take no time.
    """
    if records and "time" not in records[0]:
        raise ValueError("metrics.jsonl records have no 'time' field; this benchmark needs it")
    out, eval_total, offset, stage, last_step, prev_time, clock = [], 0.0, 0, None, 0, 0.0, 0.0
    for raw in records:
        if "event" in raw:
            continue
        if raw["time"] + clock < prev_time:  # a resumed process counts from 0 again: continue the clock
            clock = prev_time
        rec = {**raw, "time": raw["time"] + clock}
        if rec.get("stage") != stage:
            offset += last_step
            stage, last_step = rec.get("stage"), 0
        is_eval = any(k.startswith("eval/") for k in rec)
        if is_eval:
            eval_total += rec["time"] - prev_time
        step = rec.get("step", 0)
        out.append({"record": rec, "stage": stage, "step": step, "global_step": offset + step,
                    "wall_time_s": rec["time"], "train_time_s": rec["time"] - eval_total, "is_eval": is_eval})
        last_step = max(last_step, step)
        prev_time = rec["time"]
    return out


def quality_curve(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Detection / prediction evaluation points of one run (a pretraining stage's ``recon`` evaluations are
    left out), against training wall-clock (evaluation time removed) and global step."""
    return [{"stage": e["stage"], "global_step": e["global_step"], "train_time_s": e["train_time_s"],
             "wall_time_s": e["wall_time_s"], **eval_metrics(e["record"])}
            for e in timeline(records) if e["is_eval"] and "eval/AP@0.5" in e["record"]]


def stage_costs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training time and optimizer steps of each stage of one run, in order.

    A stage's time runs from the previous stage's last record to its own last record on the training clock
    (evaluations removed), so it includes the switch into it (building the model, loading weights); the
    first stage's includes process start-up. Resolution: one ``loop.log_every``.
    """
    costs, start = [], 0.0
    for stage, group in itertools.groupby(timeline(records), key=lambda entry: entry["stage"]):
        entries = list(group)
        steps, end = max(e["step"] for e in entries), entries[-1]["train_time_s"]
        costs.append({"stage": stage, "steps": steps, "train_time_s": end - start,
                      "s_per_step": (end - start) / steps if steps else math.nan})
        start = end
    return costs


def balancer_trace(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The balancer statistics of every training log record that has them, with their global step."""
    return [{"stage": e["stage"], "global_step": e["global_step"],
             **{k.split("/")[1]: _num(e["record"].get(k)) for k in BALANCE_KEYS}}
            for e in timeline(records) if not e["is_eval"] and "balance/cosine" in e["record"]]


def run_record(*, recipe: str, name: str, seed: int, records: list[dict[str, Any]],
               finals: list[dict[str, Any]], setup: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of one finished run: ``records`` its metrics.jsonl, ``finals`` each stage's final.json in
    order, ``setup`` what produced it (command, overrides, machine, revision)."""
    curve = quality_curve(records)
    if not curve:
        raise ValueError(f"{name} seed {seed}: the run has no detection / prediction evaluation")
    stages = stage_costs(records)
    ends = {f["stage"]: f.get("end") for f in finals}
    for stage in stages:
        stage["end"] = ends.get(stage["stage"])
    last = finals[-1]
    final = {k: float(v) for k, v in last["eval"].items()} if last.get("eval") else {}
    last_record = timeline(records)[-1]
    return {"recipe": recipe, "name": name, "seed": seed, "setup": setup, "curve": curve, "stages": stages,
            "final": final, "steps": sum(s["steps"] for s in stages), "train_time_s": last_record["train_time_s"],
            "wall_time_s": last_record["wall_time_s"], "balancer": balancer_trace(records)}


def first_reaching(curve: list[dict[str, float]], targets: dict[str, float]) -> dict[str, float] | None:
    """The first evaluation point meeting every target (metric >= target), or None."""
    for point in curve:
        if all(point[m] >= t for m, t in targets.items()):
            return point
    return None


def compare(runs: list[dict[str, Any]], reference: str = "a") -> list[dict[str, Any]]:
    """For every run of another recipe whose seed has a ``reference`` run: the training time (and steps) it needed
    to reach the reference's final ``HEADLINE`` metrics, as ratios of the reference's total, and whether its own
    final metrics are at least the reference's."""
    refs = {r["seed"]: r for r in runs if r["recipe"] == reference}
    rows = []
    for run in runs:
        ref = refs.get(run["seed"])
        if ref is None or run["recipe"] == reference:
            continue
        target = {m: ref["final"][m] for m in HEADLINE}
        row: dict[str, Any] = {"recipe": run["recipe"], "seed": run["seed"], "target": target}
        for label, keys in (("both", HEADLINE), *((m, (m,)) for m in HEADLINE)):
            point = first_reaching(run["curve"], {m: target[m] for m in keys})
            row[f"time_{label}_s"] = None if point is None else point["train_time_s"]
            row[f"ratio_{label}"] = None if point is None else point["train_time_s"] / ref["train_time_s"]
            row[f"step_ratio_{label}"] = None if point is None else point["global_step"] / ref["steps"]
        row["total_time_ratio"] = run["train_time_s"] / ref["train_time_s"]
        row["final_at_least_reference"] = all(run["final"][m] >= target[m] for m in HEADLINE)
        rows.append(row)
    return rows
