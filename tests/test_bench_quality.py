"""bench/quality.py's pure parts: reading a finished run, the goal verdicts, the report and its last line."""

import json

import pytest

from bench.quality import COLUMNS, final_eval, goal_lines, render, wall_seconds


def _run(tmp_path, eval_metrics, name="r"):
    run = tmp_path / name
    (run / "finetune").mkdir(parents=True)
    (run / "config.yaml").write_text("model_size: tiny\nstages:\n  pretrain:\n    task: pretrain\n"
                                     "  finetune:\n    task: multitask\n")
    (run / "finetune" / "final.json").write_text(json.dumps({"eval": eval_metrics}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "time": 12.5}) + "\n")
    return run


def _metrics(value):
    return {k: value for k in COLUMNS}


def test_final_eval_reads_the_last_stage_and_refuses_a_run_without_one(tmp_path):
    assert final_eval(_run(tmp_path, _metrics(0.5)))["AP@0.5"] == 0.5
    with pytest.raises(ValueError, match="no final evaluation"):
        final_eval(_run(tmp_path, {}, "empty"))
    run = _run(tmp_path, _metrics(0.5), "timed")
    assert wall_seconds(run) == 12.5
    (run / "bench_wall_s.json").write_text("400.0")
    assert wall_seconds(run) == 400.0


def test_goals_say_met_or_missed_by_how_much_with_the_right_direction():
    summary = {"AP@0.5": (0.45, 0.4, 0.5), "minADE": (0.9, 0.8, 1.0), "EPA": (0.61, 0.6, 0.62)}
    lines = goal_lines(summary, {"AP@0.5": 0.5, "minADE": 0.8, "EPA": 0.6})
    assert lines == ["- AP@0.5 >= 0.5: median 0.450, missed by 0.050", "- minADE <= 0.8: median 0.900, missed by 0.100",
                     "- EPA >= 0.6: median 0.610, met"]


def test_report_has_every_seed_the_median_and_the_headline_last():
    runs = {0: {"eval": _metrics(0.2), "wall_s": 100.0}, 1: {"eval": _metrics(0.6), "wall_s": 300.0},
            2: {"eval": _metrics(0.4), "wall_s": 200.0}}
    report = render("default_job", runs)
    assert report.strip().splitlines()[-1] == "vehicle AP@0.5 0.40 mean AP@0.5 0.40 EPA 0.40"
    assert "| median | 200 |" in report and "| min-max | 100-300 | 0.200-0.600 |" in report
    assert "- AP@0.5/vehicle >= 0.7: median 0.400, missed by 0.300" in report
