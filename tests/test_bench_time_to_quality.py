"""The pure parts of bench/time_to_quality.py: quality curves against training time, and the comparison."""

from __future__ import annotations

import math

import pytest

from bench.time_to_quality import compare, eval_metrics, first_reaching, quality_curve, stage_costs, stage_table


def _eval(stage, step, time, ap, epa):
    return {"stage": stage, "step": step, "time": time, "eval/AP@0.5": ap, "eval/EPA": epa, "eval/minADE": 2.0,
            "eval/AP@0.3": ap}


def test_quality_curve_removes_evaluation_time_and_chains_stages():
    records = [
        {"stage": "s1", "step": 10, "time": 10.0, "loss/total": 1.0},
        _eval("s1", 10, 14.0, 0.1, 0.0),             # 4 s of evaluation
        {"stage": "s2", "step": 10, "time": 24.0, "loss/total": 0.5},
        _eval("s2", 10, 26.0, 0.3, 0.1),             # 2 s of evaluation
    ]
    curve = quality_curve(records)
    assert [p["global_step"] for p in curve] == [10, 20]
    assert [p["train_time_s"] for p in curve] == [10.0, 20.0]
    assert [p["wall_time_s"] for p in curve] == [14.0, 26.0]
    assert curve[1]["AP@0.5"] == 0.3 and curve[1]["stage"] == "s2"


def test_quality_curve_continues_the_clock_of_a_resumed_process():
    records = [{"stage": "s", "step": 5, "time": 50.0}, _eval("s", 5, 52.0, 0.1, 0.0),
               {"stage": "s", "step": 10, "time": 30.0}, _eval("s", 10, 31.0, 0.2, 0.0)]  # restarted at 0 s
    curve = quality_curve(records)
    assert curve[1]["wall_time_s"] == pytest.approx(83.0)
    assert curve[1]["train_time_s"] == pytest.approx(83.0 - 2.0 - 1.0)


def test_stage_costs_split_training_time_by_stage_without_evaluations():
    records = [
        {"stage": "pretrain", "step": 5, "time": 12.0},  # includes 2 s of start-up
        {"stage": "pretrain", "step": 10, "time": 22.0},
        {"stage": "finetune", "step": 5, "time": 35.0},  # 3 s of stage switch
        _eval("finetune", 5, 40.0, 0.1, 0.0),            # 5 s of evaluation, not training
        {"stage": "finetune", "step": 10, "time": 50.0},
        _eval("finetune", 10, 51.0, 0.2, 0.0),
    ]
    costs = stage_costs(records)
    assert [c["stage"] for c in costs] == ["pretrain", "finetune"]
    assert [c["steps"] for c in costs] == [10, 10]
    assert [c["train_time_s"] for c in costs] == pytest.approx([22.0, 50.0 - 5.0 - 22.0])
    assert costs[1]["s_per_step"] == pytest.approx(2.3)
    assert sum(c["train_time_s"] for c in costs) == pytest.approx(quality_curve(records)[-1]["train_time_s"])


def test_stage_table_reports_each_recipe_stage_over_seeds():
    def run(seed, pre_s, fine_s):
        return {"recipe": "d", "seed": seed, "stages": [
            {"stage": "pretrain", "steps": 10, "train_time_s": pre_s, "s_per_step": pre_s / 10},
            {"stage": "finetune", "steps": 20, "train_time_s": fine_s, "s_per_step": fine_s / 20}]}

    lines = stage_table([run(0, 10.0, 40.0), run(1, 12.0, 40.0), run(2, 14.0, 40.0)]).splitlines()
    assert lines[2] == "| (d) turbotrain | pretrain | 10 | 12.0 [10.0, 14.0] | 1.200 [1.000, 1.400] |"
    assert lines[3] == "| (d) turbotrain | finetune | 20 | 40.0 | 2.000 |"
    assert len(lines) == 4


def test_eval_metrics_derive_the_hit_rate_and_mark_missing_values():
    got = eval_metrics({"eval/AP@0.5": 0.2, "eval/EPA": 0.0, "eval/num_hits": 51, "eval/num_pred_gt": 432})
    assert got["AP@0.5"] == 0.2 and got["hit_rate"] == pytest.approx(51 / 432)
    assert math.isnan(got["MR"]) and math.isnan(got["minADE"])
    assert math.isnan(eval_metrics({"eval/num_hits": 3, "eval/num_pred_gt": 0})["hit_rate"])


def test_first_reaching_needs_every_target():
    curve = [{"AP@0.5": 0.1, "EPA": 0.5}, {"AP@0.5": 0.3, "EPA": 0.1}, {"AP@0.5": 0.3, "EPA": 0.5}]
    assert first_reaching(curve, {"AP@0.5": 0.3, "EPA": 0.5}) is curve[2]
    assert first_reaching(curve, {"AP@0.5": 0.3}) is curve[1]
    assert first_reaching(curve, {"AP@0.5": 0.9}) is None


def _run(recipe, seed, curve):
    return {"recipe": recipe, "seed": seed, "curve": curve, "final": {k: curve[-1][k] for k in ("AP@0.5", "EPA")},
            "train_time_s": curve[-1]["train_time_s"]}


def _point(step, t, ap, epa):
    return {"global_step": step, "train_time_s": t, "AP@0.5": ap, "EPA": epa}


def test_compare_reports_time_and_step_ratios_against_the_manual_pipeline():
    manual = _run("a", 0, [_point(100, 50.0, 0.2, 0.1), _point(200, 100.0, 0.4, 0.2)])
    fast = _run("d", 0, [_point(50, 20.0, 0.1, 0.0), _point(100, 40.0, 0.5, 0.25), _point(200, 80.0, 0.6, 0.3)])
    never = _run("b", 0, [_point(200, 90.0, 0.3, 0.3)])
    other_seed = _run("c", 1, [_point(200, 90.0, 0.9, 0.9)])
    rows = {r["recipe"]: r for r in compare([manual, fast, never, other_seed])}
    assert set(rows) == {"d", "b"}  # no same-seed reference for "c"
    assert rows["d"]["ratio_both"] == pytest.approx(0.4) and rows["d"]["step_ratio_both"] == pytest.approx(0.5)
    assert rows["d"]["final_at_least_manual"] is True
    assert rows["b"]["ratio_both"] is None and rows["b"]["ratio_EPA"] == pytest.approx(0.9)
    assert rows["b"]["final_at_least_manual"] is False
    assert not math.isnan(rows["d"]["time_both_s"])
