"""bench/time_to_quality.py: quality curves against training time, run records, the comparison, each stage's
automatic end in the training overrides, and the report compiled from records."""

from __future__ import annotations

import math

import pytest

import argparse
import json

from bench.time_to_quality import RECIPES, STAGE_METRICS, load_records, log_path, overrides, run_name
from bench.ttq_records import (balancer_trace, compare, eval_metrics, first_reaching, quality_curve, run_record,
                               stage_costs)
from bench.ttq_report import write_report
from trainer.config_io import load_config


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
    return {"recipe": recipe, "name": recipe, "seed": seed, "curve": curve,
            "final": {k: curve[-1][k] for k in ("AP@0.5", "EPA")}, "train_time_s": curve[-1]["train_time_s"],
            "steps": curve[-1]["global_step"]}


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
    assert rows["d"]["total_time_ratio"] == pytest.approx(0.8)
    assert rows["d"]["final_at_least_reference"] is True
    assert rows["b"]["ratio_both"] is None and rows["b"]["ratio_EPA"] == pytest.approx(0.9)
    assert rows["b"]["final_at_least_reference"] is False
    assert not math.isnan(rows["d"]["time_both_s"])


def test_pretraining_evaluations_are_not_quality_points_but_their_time_is_not_training():
    records = [
        {"stage": "pretrain", "step": 10, "time": 10.0},
        {"stage": "pretrain", "step": 10, "time": 13.0, "eval/recon": 0.9},  # 3 s of evaluation
        {"stage": "pretrain", "event": "stage_end", "step": 10, "reason": "plateau"},  # events take no time
        {"stage": "finetune", "step": 10, "time": 23.0, "balance/cosine": 0.2, "balance/conflict_fraction": 0.5,
         "balance/norm_ratio": 2.0},
        _eval("finetune", 10, 25.0, 0.3, 0.2),
    ]
    curve = quality_curve(records)
    assert len(curve) == 1 and curve[0]["global_step"] == 20 and curve[0]["train_time_s"] == pytest.approx(20.0)
    assert balancer_trace(records) == [{"stage": "finetune", "global_step": 20, "cosine": 0.2,
                                        "conflict_fraction": 0.5, "norm_ratio": 2.0}]
    finals = [{"stage": "pretrain", "eval": {"recon": 0.9}, "end": {"reason": "plateau", "step": 10}},
              {"stage": "finetune", "eval": {"AP@0.5": 0.3, "EPA": 0.2}, "end": {"reason": "cap", "step": 10}}]
    record = run_record(recipe="d", name="turbotrain", seed=0, records=records, finals=finals, setup={})
    assert record["steps"] == 20 and record["final"] == {"AP@0.5": 0.3, "EPA": 0.2}
    assert [s["end"]["reason"] for s in record["stages"]] == ["plateau", "cap"]
    assert record["train_time_s"] == pytest.approx(20.0) and record["wall_time_s"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="no detection / prediction evaluation"):
        run_record(recipe="d", name="turbotrain", seed=0, records=records[:3], finals=finals[:1], setup={})


def _args(**kw):
    base = dict(model_size="small", lr=4e-3, batch_size=2, eval_every=200, log_every=50, patience=3, min_delta=0.005,
                recon_min_delta=0.01, cap=4000, pretrain_cap=2000, override=[])
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("key", list(RECIPES))
def test_every_stage_of_every_recipe_ends_on_its_own_plateau(key, tmp_path):
    recipe = RECIPES[key]
    cfg = load_config(recipe.config, overrides(recipe, 0, tmp_path / "run", _args()))
    assert list(cfg.stages) == list(recipe.stages)
    for name, stage in cfg.stages.items():
        metric, *also = STAGE_METRICS[name]
        assert (stage.until.metric, list(stage.until.also), stage.until.eval_every, stage.until.patience) == \
            (metric, also, 200, 3)
        assert stage.steps == (2000 if stage.task == "pretrain" else 4000)
        assert stage.until.min_delta == (0.01 if metric == "recon" else 0.005)
    assert cfg.model_size == "small" and cfg.optim.lr == 4e-3
    assert (cfg.balancing.fork.rule == "sum") is (key in ("a", "b", "c"))


def test_the_report_is_compiled_from_records_alone(tmp_path):
    curve = lambda scale: [dict(_point(200, 60.0 * scale, 0.3, 0.4), **{"AP@0.5/vehicle": 0.5, "minADE": 1.0}),  # noqa: E731
                           dict(_point(400, 120.0 * scale, 0.5, 0.6), **{"AP@0.5/vehicle": 0.7, "minADE": 0.9})]
    for key, scale in (("a", 2.0), ("d", 1.0)):
        run = _run(key, 0, curve(scale))
        run.update(name=RECIPES[key].name, wall_time_s=150.0 * scale, final={"AP@0.5": 0.5, "EPA": 0.6,
                   "AP@0.5/vehicle": 0.7, "minADE": 0.9},
                   stages=[{"stage": "s", "steps": 400, "train_time_s": 120.0 * scale, "s_per_step": 0.3 * scale,
                            "end": {"reason": "plateau", "message": "plateau: EPA"}}],
                   balancer=[{"global_step": 10, "cosine": 0.1, "conflict_fraction": 0.3}] if key == "d" else [])
        folder = tmp_path / "time_to_quality" / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{run['name']}_s0.json").write_text(json.dumps(run))
    records = load_records(tmp_path)
    assert [r["recipe"] for r in records] == ["a", "d"]
    text = write_report(records, tmp_path, command="test")
    assert text.strip().splitlines()[-1].startswith("headline: (d) turbotrain reaches (a)'s final AP@0.5 and EPA in "
                                                    "0.500 of (a)'s training time (1/1 seeds reached")
    assert "| (d) turbotrain | 0 | 400 | 120 | 150 | 0.700 | 0.500 | 0.600 | 0.900 |" in text
    assert (tmp_path / "time_to_quality.png").stat().st_size > 10_000
    assert (tmp_path / "time_to_quality_conflict.png").is_file()
    assert json.loads((tmp_path / "time_to_quality.json").read_text())["comparison"][0]["ratio_both"] == 0.5


def test_every_run_has_its_own_log_even_when_its_name_holds_a_share(tmp_path):
    names = [run_name(RECIPES["b"], 0, share) for share in (0.1, 0.25, 1.0)]
    logs = [log_path(tmp_path / name) for name in names]
    assert [p.name for p in logs] == ["joint_scratch_l0.1_s0.log", "joint_scratch_l0.25_s0.log", "joint_scratch_s0.log"]


def test_label_runs_fine_tune_on_the_labelled_share_from_the_full_runs_pretraining(tmp_path, monkeypatch):
    import bench.time_to_quality as ttq

    monkeypatch.setattr(ttq, "labelled_shards", lambda share, args: f"/data/l{share:g}.tar")
    args = _args(work=tmp_path)
    config, extra = ttq.label_overrides(RECIPES["b"], 0, 0.1, args)
    assert config == RECIPES["b"].config and extra == ["stages.joint.train_shards=/data/l0.1.tar"]
    with pytest.raises(FileNotFoundError, match="turbotrain_s0 first"):
        ttq.label_overrides(RECIPES["d"], 0, 0.25, args)
    pretrained = tmp_path / "turbotrain_s0" / "pretrain" / "final.safetensors"
    pretrained.parent.mkdir(parents=True)
    pretrained.write_bytes(b"")
    config, extra = ttq.label_overrides(RECIPES["d"], 0, 0.25, args)
    assert config == "recipes/multitask.yaml"
    stage_only = ttq.Recipe("d", "turbotrain", config, ("finetune",))
    cfg = load_config(config, [*overrides(stage_only, 0, tmp_path / "run", args), *extra])
    assert list(cfg.stages) == ["finetune"] and cfg.stages["finetune"].init_from == str(pretrained)
    assert cfg.stages["finetune"].train_shards == "/data/l0.25.tar"
    assert (cfg.stages["finetune"].until.metric, cfg.stages["finetune"].until.also) == ("EPA", ["AP@0.5"])
    assert ttq.run_name(RECIPES["d"], 2, 0.25) == "turbotrain_l0.25_s2" and ttq.run_name(RECIPES["d"], 2) == \
        "turbotrain_s2"


def test_the_label_table_sets_the_shares_side_by_side(tmp_path):
    runs = []
    for key, share, epa in (("b", 1.0, 0.5), ("d", 1.0, 0.7), ("b", 0.1, 0.2), ("d", 0.1, 0.6)):
        run = _run(key, 0, [dict(_point(100, 10.0, 0.4, epa), **{"AP@0.5/vehicle": 0.5, "minADE": 1.0})])
        run.update(name=RECIPES[key].name, wall_time_s=12.0, label_share=share, balancer=[],
                   final={"AP@0.5": 0.4, "EPA": epa, "AP@0.5/vehicle": 0.5, "minADE": 1.0}, stages=[])
        runs.append(run)
    text = write_report(runs, tmp_path, command="test")
    assert "| 10% | (d) turbotrain | 0 | 0.500 | 0.400 | 0.600 | 1.000 | 10 |" in text
    assert "| 100% | (b) joint_scratch | 0 | 0.500 | 0.400 | 0.500 | 1.000 | 10 |" in text
    assert "| (b) joint_scratch | 0 | 100 |" in text and "| (b) joint_scratch | 0 | 100 | 10 | 12 | 0.500 | 0.400 | 0.200" \
        not in text  # the main table holds only the 100% runs
