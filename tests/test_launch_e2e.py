"""launch/export.py, launch/evaluate.py (1 and 2 processes) and launch/visualize.py --checkpoint on a real tiny run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.test_launch_checkpoint_io import launch_module
from tests.train_harness import REPO, base_overrides, env, free_port, run_train
from trainer.checkpointing.export import read_exported
from trainer.data.shard_read import read_samples
from trainer.data.shard_write import ShardSink

pytestmark = pytest.mark.slow
# Distance matching with every detection kept makes an untrained model match some objects, so that the
# prediction metrics are numbers (not NaN) and compare meaningfully across process counts.
EVAL_OVERRIDES = ["eval.pred_match=distance", "eval.pred_score_threshold=0.0", "data.val_samples=4"]
METRIC_KEYS = [f"AP@{t}{c}" for t in ("0.3", "0.5", "0.7") for c in ("", "/vehicle", "/pedestrian", "/truck")] + [
    "minADE", "minFDE", "MR", "EPA", "num_frames", "num_gt", "num_det", "num_matched", "num_hits", "num_fp"]


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory) -> Path:
    """A 2-step multitask run (DeepSpeed engine, one process): config.yaml, finetune/{final.safetensors, checkpoints/}."""
    run_dir = tmp_path_factory.mktemp("launch") / "run"
    result = run_train("python", 1, ["--config", "recipes/multitask.yaml", *base_overrides(*tiny_data, run_dir, steps=2),
                                     "stages.finetune.evaluate=false"])
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


@pytest.fixture(scope="module")
def two_val_shards(tiny_data, tmp_path_factory) -> str:
    """The tiny val shard split into two shards of whole samples, so that 2 ranks read different samples."""
    samples = list(read_samples(tiny_data[1].split(",")))
    assert len(samples) >= 2
    with ShardSink(str(tmp_path_factory.mktemp("val2") / "val-%06d.tar"), maxcount=(len(samples) + 1) // 2) as sink:
        for sample in samples:
            sink.write(sample)
    assert len(sink.shards) == 2
    return ",".join(sink.shards)


@pytest.fixture(scope="module")
def one_process_eval(run, two_val_shards, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("eval1") / "metrics.json"
    assert launch_module("evaluate").main(["--checkpoint", str(run), "--data", two_val_shards, "--out", str(out),
                                           *EVAL_OVERRIDES]) == 0
    return json.loads(out.read_text())


def test_export_from_engine_checkpoint_equals_stage_final(run, tmp_path, capsys):
    engine = run / "finetune" / "checkpoints" / "step_000002"
    out = tmp_path / "w.safetensors"
    assert launch_module("export").main(["--checkpoint", str(engine), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    exported = read_exported(out)
    final = read_exported(run / "finetune" / "final.safetensors")
    assert exported["model_config"] == final["model_config"]
    assert exported["model"].keys() == final["model"].keys()
    for name, tensor in final["model"].items():
        assert exported["model"][name].dtype == tensor.dtype and torch.equal(exported["model"][name], tensor), name
    assert f"{len(final['model'])} tensors" in printed and "(stage finetune)" in printed


def test_evaluate_one_process_writes_every_metric(one_process_eval, run, capsys):
    record = one_process_eval
    assert record["kind"] == "engine" and record["stage"] == "finetune" and record["processes"] == 1
    assert record["checkpoint"] == str(run / "finetune" / "checkpoints" / "step_000002")
    metrics = record["metrics"]
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics["num_frames"] == 4  # val_samples=4 over the two shards: every sample once
    assert metrics["num_gt"] > 0 and metrics["num_matched"] > 0
    assert isinstance(metrics["minADE"], float) and metrics["minFDE"] >= metrics["minADE"] > 0


def test_evaluate_exported_weights_matches_engine_checkpoint(one_process_eval, run, two_val_shards, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert launch_module("evaluate").main(["--checkpoint", str(run / "finetune" / "final.safetensors"), "--data",
                                           two_val_shards, "--out", str(out), *EVAL_OVERRIDES]) == 0
    printed = capsys.readouterr().out
    assert "AP (%)" in printed and "minADE" in printed  # format_table
    record = json.loads(out.read_text())
    assert record["kind"] == "exported"
    assert record["metrics"] == pytest.approx(one_process_eval["metrics"], abs=1e-6)


def test_evaluate_two_processes_equals_one(one_process_eval, run, two_val_shards, tmp_path):
    out = tmp_path / "m2.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(REPO / "launch" / "evaluate.py"), "--checkpoint", str(run), "--data", two_val_shards, "--out", str(out),
           *EVAL_OVERRIDES]
    result = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("num_frames=") == 1  # rank 0 alone prints the table
    record = json.loads(out.read_text())
    assert record["processes"] == 2
    # each process runs the model on other batch compositions, whose float32 convolutions may round differently
    # (minADE was seen 4.6e-9 apart); 1e-6 as for exported weights above, far below any metric's resolution
    assert record["metrics"] == pytest.approx(one_process_eval["metrics"], abs=1e-6)


def test_evaluate_two_processes_one_rank_without_data_fails_on_both_without_hanging(run, tiny_data, tmp_path):
    """Rank 1's only shard is missing: it fails before the gather, tells rank 0 through it, both exit 2."""
    shards = f"{tiny_data[1]},{tmp_path / 'missing-000001.tar'}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(REPO / "launch" / "evaluate.py"), "--checkpoint", str(run / "finetune" / "final.safetensors"), "--data", shards,
           "data.val_samples=4"]
    result = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    assert "[rank 1] error: data" in result.stderr and "missing-000001.tar" in result.stderr
    assert "[rank 0] error: rank 1 failed" in result.stderr
    assert "exitcode  : 2" in result.stderr  # torchrun's failure summary: the script itself exited 2


@pytest.mark.filterwarnings("ignore:skipping corrupt data:RuntimeWarning")  # the missing shard
def test_evaluate_bad_data_and_config_exit_2(run, tmp_path, capsys):
    evaluate = launch_module("evaluate").main
    final = str(run / "finetune" / "final.safetensors")
    assert evaluate(["--checkpoint", final, "--data", str(tmp_path / "missing-000000.tar")]) == 2
    assert "missing-000000.tar" in capsys.readouterr().err
    assert evaluate(["--checkpoint", final, "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:skipping corrupt data:RuntimeWarning")
def test_visualize_checkpoint_draws_predictions(run, tmp_path, capsys):
    visualize = launch_module("visualize").main
    with_pred, gt_only = tmp_path / "pred", tmp_path / "gt"
    common = ["--num-samples", "2", "--pixels-per-metre", "2"]
    assert visualize(["--checkpoint", str(run), "--out-dir", str(with_pred), "--score-threshold", "0.0", *common]) == 0
    assert visualize(["--checkpoint", str(run), "--out-dir", str(gt_only), "--score-threshold", "1.0", *common]) == 0
    pngs = sorted(with_pred.glob("*.png"))
    assert len(pngs) == 2 and [p.name for p in pngs] == sorted(p.name for p in gt_only.glob("*.png"))
    drawn, plain = (torch.tensor(list(Image.open(d / pngs[0].name).convert("RGB").getdata())) for d in (with_pred, gt_only))
    assert drawn.shape == plain.shape and (drawn != plain).any(dim=1).sum() > 100  # predicted boxes add pixels
    assert visualize(["--checkpoint", str(run), "--stage", "nope", "--out-dir", str(tmp_path / "x")]) == 2
    assert "no stage 'nope'" in capsys.readouterr().err
