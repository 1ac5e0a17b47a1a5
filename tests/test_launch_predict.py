"""launch/predict.py: a checkpoint on an OpenCOOD-layout folder (converted on the fly) and on shards: JSON Lines
in the ego and world frames, npz, pictures, the evaluation table, bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.v2x_model import V2XModel
from tests.opencood_fixtures import write_toy_scenario
from tests.test_launch_checkpoint_io import _engine_folder, launch_module
from trainer.checkpointing.export import export_weights
from trainer.config_io import load_config
from trainer.data.geometry import x_to_world
from trainer.eval.prediction_file import ego_to_world

WINDOW = ["--history", "2", "--history-stride", "2", "--future", "6", "--future-stride", "1", "--sample-stride", "4",
          "--mode", "v2v"]
MODEL = ["model.encoder=pillars", "model.history=2"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    cfg = load_config(None, MODEL)
    torch.manual_seed(0)
    folder = _engine_folder(root / "run" / "finetune", "step_000001", V2XModel(cfg.model).state_dict())
    return export_weights(folder, root / "w.safetensors", cfg.model)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src")
    write_toy_scenario(root / "toy", frames=12, vehicles=2, infrastructure=1, points_per_frame=200, objects=4)
    return root


def test_ego_to_world_inverts_the_ego_frame():
    pose = np.array([10.0, -5.0, 1.7, 0.0, 90.0, 0.0])
    boxes = np.array([[2.0, 1.0, -0.5, 4, 2, 1.5, 0.25]])
    world, traj = ego_to_world(boxes, np.array([[[[2.0, 1.0], [3.0, 1.0]]]]), pose)
    np.testing.assert_allclose(world[0, :3], (x_to_world(pose) @ [2.0, 1.0, -0.5, 1.0])[:3], atol=1e-9)
    np.testing.assert_allclose(world[0, 6], 0.25 + np.pi / 2)
    np.testing.assert_allclose(traj[0, 0], [[9.0, -3.0], [9.0, -2.0]], atol=1e-9)


def test_predict_on_an_opencood_folder_writes_both_frames_npz_pictures_and_the_table(tmp_path, weights, src, capsys):
    predict = launch_module("predict")
    out = tmp_path / "p.jsonl"
    rc = predict.main(["--checkpoint", str(weights), "--src", str(src), "--out", str(out), "--npz", str(tmp_path / "npz"),
                       "--pictures", "1", "--out-dir", str(tmp_path / "viz"), "--score-threshold", "0.0", *WINDOW, *MODEL])
    text = capsys.readouterr().out
    assert rc == 0, text
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2 and {r["ego_id"] for r in lines} == {100, 101}  # 2 CAVs, one time
    first = lines[0]
    n = len(first["scores"])
    assert n > 0 and len(first["ego"]["boxes"]) == n == len(first["world"]["boxes"]) == len(first["classes"])
    assert np.asarray(first["ego"]["trajectories"]).shape[1:] == (6, 6, 2)  # K = 6 modes, T_f = 6 steps
    arrays = np.load(tmp_path / "npz" / f"{first['key']}.npz", allow_pickle=False)
    np.testing.assert_allclose(first["world"]["boxes"], arrays["world_boxes"], atol=1e-4)
    world, _ = ego_to_world(arrays["boxes"], arrays["trajectories"], arrays["ego_pose"])
    np.testing.assert_allclose(arrays["world_boxes"], world)
    assert len(list((tmp_path / "viz").glob("*.png"))) == 1
    assert "AP (%)" in text and "minADE" in text and "wrote 2 sample(s)" in text


def test_predict_on_shards_and_bad_input(tmp_path, weights, src, capsys):
    from trainer.data.convert import main as convert_main

    assert convert_main(["--src", str(src), "--out", str(tmp_path / "s-%06d.tar"), "--no-progress", *WINDOW]) == 0
    predict = launch_module("predict")
    out = tmp_path / "p.jsonl"
    assert predict.main(["--checkpoint", str(weights), "--data", str(tmp_path / "s-000000.tar"), "--out", str(out),
                         "--max-samples", "2", *MODEL]) == 0
    assert len(out.read_text().splitlines()) >= 2
    capsys.readouterr()
    shutil.copytree(src, tmp_path / "bad")
    (tmp_path / "bad" / "toy" / "100" / "000002.yaml").write_text("lidar_pose: [1, 2]\n")
    for args, message in [(["--data", str(tmp_path / "none-{000000..000001}.tar")], "none-000000.tar"),
                          (["--src", str(tmp_path / "bad")], "lidar_pose must be a list of 6"),
                          (["--data", "pipe:cat x.tar"], "--allow-command-urls")]:
        assert predict.main(["--checkpoint", str(weights), "--out", str(tmp_path / "q.jsonl"), *args, *WINDOW,
                             *MODEL]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "q.jsonl").exists() and not (tmp_path / ".q.jsonl.partial").exists()
