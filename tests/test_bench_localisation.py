"""The localisation diagnostic: matched share, centre error and IoU per class, against known detections."""

import math

import pytest
import torch

from bench.localisation import match_errors, summarise
from models.config import model_config
from models.detections import SceneDetections
from tests.batch_factory import make_batch


def _detections(boxes, labels, scores):
    n = len(boxes)
    return SceneDetections(boxes=boxes, scores=scores, labels=labels, trajectories=torch.zeros(n, 1, 1, 2),
                           mode_scores=torch.ones(n, 1))


def test_shifted_and_missing_detections_are_told_apart():
    batch = make_batch(model_config("tiny"), num_scenes=1, agents=1, max_agents=1, num_objects=3, seed=2)
    mask = batch.gt_mask[0]
    gt, labels = batch.gt_boxes[0][mask].float(), batch.gt_classes[0][mask]
    shifted = gt.clone()
    shifted[0, 0] += 0.3  # 0.3 m off along x
    shifted[1, 0] += 5.0  # too far to match
    dets = [_detections(shifted, labels, torch.full((len(gt),), 0.9))]
    rows = match_errors(dets, batch, radius=1.5, score=0.3)
    assert [r[1] for r in rows] == [True, False, True]
    assert rows[0][2] == pytest.approx(0.3, abs=1e-4) and rows[0][3] < 1.0
    assert rows[2][2] == pytest.approx(0.0, abs=1e-5) and rows[2][3] == pytest.approx(1.0, abs=1e-4)
    assert all(math.isnan(v) for v in rows[1][2:])
    low = match_errors([_detections(gt, labels, torch.full((len(gt),), 0.1))], batch, radius=1.5, score=0.3)
    assert not any(r[1] for r in low)  # below the score threshold nothing matches
    names = ["vehicle", "pedestrian", "truck"]
    summary = summarise(rows, names)
    assert sum(s["gt"] for s in summary) == len(gt)
    for s in summary:
        if s["gt"]:
            assert 0 <= s["found"] <= 1
