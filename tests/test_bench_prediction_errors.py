"""The prediction-error diagnostic: track-frame error split, matching, oracles, against hand-made cases."""

import math

import numpy as np
import pytest
import torch

from bench.prediction_errors import ctrv_extrapolation, greedy_nearest, object_rows, summarise, track_frame_errors
from models.config import model_config
from models.detections import SceneDetections
from tests.batch_factory import make_batch


def test_track_frame_split_of_the_final_error():
    gt_now, gt_last = np.array([[0.0, 0.0], [5.0, 5.0]]), np.array([[10.0, 0.0], [5.2, 5.0]])
    pred = np.array([[11.0, -2.0], [5.2, 6.0]])  # 1 m too far and 2 m to the right; 1 m left of a still object
    along, cross = track_frame_errors(pred, gt_last, gt_now, yaw=np.array([0.0, math.pi / 2]))
    assert along[0] == pytest.approx(1.0) and cross[0] == pytest.approx(-2.0)
    # The second object barely moves: its frame is its heading (+y), so +1 m in y is along-track.
    assert along[1] == pytest.approx(1.0) and cross[1] == pytest.approx(0.0, abs=1e-12)


def test_greedy_nearest_is_one_to_one_and_bounded():
    gt = np.array([[0.0, 0.0], [3.0, 0.0], [50.0, 0.0]])
    det = np.array([[0.5, 0.0], [0.2, 0.0], [10.0, 0.0]])
    assert sorted(greedy_nearest(gt, det, radius=2.0)) == [(0, 1)]
    assert sorted(greedy_nearest(gt, det, radius=3.0)) == [(0, 1), (1, 0)]
    assert greedy_nearest(gt, np.zeros((0, 2)), radius=2.0) == []


def test_ctrv_extrapolation_follows_a_circle_and_a_line():
    line = ctrv_extrapolation(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]), steps=3)
    assert line == pytest.approx([5.0, 0.0])
    angles = np.deg2rad([0.0, 10.0, 20.0, 50.0])  # points on a unit circle, 10 degrees apart
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert ctrv_extrapolation(circle[:3], steps=3) == pytest.approx(circle[3], abs=1e-9)


def test_object_rows_score_the_best_mode_and_the_oracles():
    batch = make_batch(model_config("tiny"), num_scenes=1, agents=1, max_agents=1, num_objects=3, seed=4, min_gap=6.0)
    mask = batch.gt_mask[0]
    boxes, future = batch.gt_boxes[0][mask], batch.gt_future[0][mask]
    trajectories = torch.stack([future + 5.0, future], dim=1)  # mode 1 is exact
    trajectories[1, 1, -1, 0] += 3.0  # object 1's exact mode ends 3 m off along x
    det = SceneDetections(boxes=boxes.clone(), scores=torch.tensor([0.9, 0.9, 0.1]), labels=batch.gt_classes[0][mask],
                          trajectories=trajectories, mode_scores=torch.full((3, 2), 0.5))
    rows = object_rows([det], batch, score=0.3, radius=2.0, step_s=0.5)
    assert [r["matched"] for r in rows] == [True, True, False]  # object 2's detection is below the score
    assert rows[0]["fde"] == pytest.approx(0.0, abs=1e-5)
    assert rows[1]["fde"] == pytest.approx(3.0, abs=1e-4)
    assert math.hypot(rows[1]["along"], rows[1]["cross"]) == pytest.approx(3.0, abs=1e-4)
    # The factory's objects move on constant-speed, constant-turn paths: the turn oracle is exact.
    assert rows[0]["ctrv_fde"] == pytest.approx(0.0, abs=1e-3)
    summary = summarise(rows, "all", miss=2.0)
    assert summary["gt"] == 3 and summary["matched"] == pytest.approx(2 / 3)
    assert summary["MR"] == pytest.approx(0.5) and summary["misses_mostly_along"] in (0.0, 1.0)
    assert summary["oracle_ctrv_MR"] == pytest.approx(0.0)


def test_the_track_oracle_learns_from_true_tracks_and_scores_the_matched_objects():
    from bench.prediction_errors import fit_track_oracle, true_tracks

    config = model_config("tiny")
    batches = [make_batch(config, num_scenes=2, agents=1, max_agents=1, num_objects=4, seed=s, ground_points=10,
                          points_per_object=4) for s in range(3)]
    past, future, boxes, labels, usable = true_tracks(batches[0], 0)
    assert past.shape == (4, config.history - 1, 2) and future.shape == (4, config.future_steps, 2)
    assert torch.allclose(past[:, -1].norm(dim=-1), (batches[0].gt_past[0, :, -2] - boxes[:, :2]).norm(dim=-1))
    oracle = fit_track_oracle(batches, num_classes=3, num_modes=2, iters=200)
    batch = batches[0]
    mask = batch.gt_mask[0]
    det = SceneDetections(boxes=batch.gt_boxes[0][mask], scores=torch.full((int(mask.sum()),), 0.9),
                          labels=batch.gt_classes[0][mask], trajectories=batch.gt_future[0][mask][:, None],
                          mode_scores=torch.ones(int(mask.sum()), 1))
    rows = object_rows([det], batch, score=0.3, radius=2.0, step_s=0.5, track_oracle=oracle)
    assert all(r["matched"] and np.isfinite(r["track_oracle_fde"]) for r in rows)
    assert not math.isnan(summarise(rows, "all", miss=2.0)["oracle_track_MR"])
