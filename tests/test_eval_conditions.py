"""Evaluating a checkpoint under cooperation conditions: the clean settings give exactly the evaluation as it was,
noise and latency change it the same way every time (on one process or two), ``launch/evaluate.py`` reports every
sample's message bytes, and a latency the data cannot give is exit 2."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest
import torch

from tests.test_launch_checkpoint_io import launch_module
from tests.train_harness import REPO, env, free_port
from trainer.checkpointing.checkpoint_io import load_for_inference
from trainer.data.latency import LatencyConfig
from trainer.data.loader import build_loader
from trainer.data.pose_noise import PoseNoiseConfig
from trainer.eval.cooperative import predict_cooperative
from trainer.eval.evaluator import Evaluator
from trainer.eval.model_eval import evaluation_conditions, predict_scenes, run_evaluation

torch.set_num_threads(1)
HARD = ["eval.pose_noise.xy_std_m=1.0", "eval.pose_noise.yaw_std_deg=2.0", "eval.latency.max_frames=3",
        "eval.latency.min_frames=1"]


@pytest.fixture(scope="module")
def setup(tiny_exported_weights, toy_conditions_data):
    _, delayed, _ = toy_conditions_data
    return load_for_inference(tiny_exported_weights, overrides=["data.num_workers=0", f"data.val_shards={delayed}"])


def batches(setup, cfg=None):
    cfg = cfg or setup.cfg
    return list(build_loader(cfg.data, cfg.model.grid, split="val", rank=0, world_size=1, seed=0,
                             conditions=evaluation_conditions(cfg)))


def same(a: dict, b: dict, keys) -> bool:
    return all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in keys)


def test_the_clean_settings_evaluate_exactly_as_before(setup):
    model, cfg = setup.model, setup.cfg
    old = Evaluator(cfg.eval)
    plain = list(build_loader(cfg.data, cfg.model.grid, split="val", rank=0, world_size=1, seed=0))
    for batch in plain:
        reference = predict_scenes(model, batch)
        old.update(reference, batch)
        now = predict_cooperative(model, batch, cfg.eval).detections
        assert all(torch.equal(x.boxes, y.boxes) and torch.equal(x.scores, y.scores)
                   and torch.equal(x.trajectories, y.trajectories) for x, y in zip(now, reference))
    before = old.compute()
    result = run_evaluation(model, batches(setup), cfg, device=torch.device("cpu"))
    assert before["num_det"] > 0 and same(result.metrics, before, before)
    c, (h, w) = model.config.bev_channels, model.config.bev_shape
    assert result.metrics["comm/bytes_mean"] == h * w * c * 4 and len(result.messages) == before["num_frames"]


def test_noise_and_latency_change_the_detections_the_same_way_every_time(setup):
    from trainer.config_io import load_config

    hard = dataclasses.replace(setup.cfg, eval=load_config(None, HARD).eval)
    assert hard.eval.pose_noise == PoseNoiseConfig(xy_std_m=1.0, yaw_std_deg=2.0)
    assert hard.eval.latency == LatencyConfig(min_frames=1, max_frames=3)
    first, again, clean = batches(setup, hard), batches(setup, hard), batches(setup)
    scores = [[predict_cooperative(setup.model, b, hard.eval).detections for b in run] for run in (first, again, clean)]
    flat = [torch.cat([d.scores for dets in run for d in dets]) for run in scores]
    assert torch.equal(flat[0], flat[1]) and not (len(flat[0]) == len(flat[2]) and torch.equal(flat[0], flat[2]))


def test_evaluate_cli_reports_every_samples_messages(setup, tiny_exported_weights, toy_conditions_data, tmp_path,
                                                     capsys):
    _, _, plain = toy_conditions_data
    evaluate = launch_module("evaluate").main
    out = tmp_path / "m.json"
    assert evaluate(["--checkpoint", str(tiny_exported_weights), "--data", plain, "--out", str(out),
                     "data.num_workers=0"]) == 0
    report = json.loads(out.read_text())
    c, (h, w) = setup.model.config.bev_channels, setup.model.config.bev_shape
    assert report["conditions"]["fusion"] == "intermediate" and report["conditions"]["latency"]["max_frames"] == 0
    assert len(report["communication"]) == report["metrics"]["num_frames"] == 4
    assert all(entry["bytes"] == [h * w * c * 4] * 2 and sorted(entry["agent_types"]) == ["infrastructure", "vehicle"]
               for entry in report["communication"])
    assert "comm/bytes_mean" in capsys.readouterr().out
    assert evaluate(["--checkpoint", str(tiny_exported_weights), "--data", plain, "--out", str(out),
                     "data.num_workers=0", "eval.fusion=late"]) == 0
    assert json.loads(out.read_text())["conditions"]["fusion"] == "late"


@pytest.mark.parametrize("override, message", [
    ("eval.latency.max_frames=1", "--delay-frames >= 1"), ("eval.fusion=early", "eval.fusion must be one of")])
def test_evaluate_cli_bad_conditions_exit_2(tiny_exported_weights, toy_conditions_data, override, message, capsys):
    _, _, plain = toy_conditions_data
    extra = ["eval.latency.min_frames=1"] if "latency" in override else []
    code = launch_module("evaluate").main(["--checkpoint", str(tiny_exported_weights), "--data", plain,
                                           "data.num_workers=0", override, *extra])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_draw_the_same_conditions_as_one(tiny_exported_weights, toy_conditions_data, tmp_path):
    _, delayed, _ = toy_conditions_data
    args = ["--checkpoint", str(tiny_exported_weights), "--data", delayed, "data.num_workers=0", "data.batch_size=1",
            "data.val_samples=4", "eval.fusion=late", *HARD]
    one = tmp_path / "one.json"
    assert launch_module("evaluate").main([*args, "--out", str(one)]) == 0
    two = tmp_path / "two.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), str(REPO / "launch" / "evaluate.py"), *args, "--out", str(two)],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    assert double["processes"] == 2 and double["communication"] == single["communication"]
    assert double["metrics"] == single["metrics"]
