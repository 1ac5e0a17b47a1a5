"""minADE / minFDE / MR / EPA on hand-built cases, including false positives and unmatched GT."""

import math

import numpy as np
import pytest

from tests.test_eval_fixtures import box, make_batch, make_detections
from trainer.eval import EvalConfig, Evaluator, min_ade_fde, summarize_prediction


def straight(x0, y0, dx=1.0, steps=3):
    return [[x0 + dx * (t + 1), y0] for t in range(steps)]


def test_min_ade_fde_uses_valid_steps_and_last_valid_step():
    gt = np.array([[[1.0, 0.0], [2.0, 0.0], [9.0, 9.0]]])
    pred = np.array([[[[1.0, 0.0], [2.0, 1.0], [0.0, 0.0]],     # errors 0, 1 -> ADE .5, FDE 1
                      [[1.0, 2.0], [2.0, 0.0], [9.0, 9.0]]]])   # errors 2, 0 -> ADE 1, FDE 0
    ade, fde = min_ade_fde(pred, gt, np.array([[True, True, False]]))
    assert ade.tolist() == [0.5] and fde.tolist() == [0.0]  # minima taken over modes independently
    ade, fde = min_ade_fde(pred, gt, np.array([[True, False, True]]))
    assert fde[0] == pytest.approx(0.0) and ade[0] == pytest.approx(min((0 + math.hypot(9, 9)) / 2, 1.0))


def test_min_ade_fde_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one valid"):
        min_ade_fde(np.zeros((1, 2, 3, 2)), np.zeros((1, 3, 2)), np.zeros((1, 3), bool))
    with pytest.raises(ValueError, match="pred must be"):
        min_ade_fde(np.zeros((1, 3, 2)), np.zeros((1, 3, 2)), np.ones((1, 3), bool))
    with pytest.raises(ValueError, match="valid must be"):
        min_ade_fde(np.zeros((1, 2, 3, 2)), np.zeros((1, 3, 2)), np.ones((1, 2), bool))


def test_summarize_prediction_hand_values():
    s = summarize_prediction(np.array([0.5, 1.0, 3.0]), np.array([1.0, 2.0, 4.0]), 2, 5,
                             miss_threshold=2.0, fp_weight=0.5)
    assert (s.num_matched, s.num_hits, s.num_fp, s.num_gt) == (3, 2, 2, 5)
    assert s.min_ade == pytest.approx(1.5) and s.min_fde == pytest.approx(7 / 3)
    assert s.miss_rate == pytest.approx(1 / 3) and s.epa == pytest.approx((2 - 1) / 5)
    assert summarize_prediction(np.array([0.0]), np.array([0.0]), 10, 1, miss_threshold=2, fp_weight=0.5).epa == 0.0
    empty = summarize_prediction(np.zeros(0), np.zeros(0), 0, 0, miss_threshold=2, fp_weight=0.5)
    assert math.isnan(empty.min_ade) and math.isnan(empty.miss_rate) and math.isnan(empty.epa)
    with pytest.raises(ValueError, match="num_gt"):
        summarize_prediction(np.zeros(2), np.zeros(2), 0, 1, miss_threshold=2, fp_weight=0.5)


def scene_with_futures():
    boxes = [box(0, 0), box(10, 0), box(20, 0), box(30, 0)]
    future = [straight(0, 0), straight(10, 0), straight(20, 0), straight(30, 0)]
    valid = [[True] * 3, [True] * 3, [True] * 3, [False] * 3]  # GT 3 has no future
    return {"key": "s", "boxes": boxes, "classes": [0, 0, 0, 0], "future": future, "future_valid": valid}


def detections_for(scene):
    perfect = [straight(0, 0), [[0, 5]] * 3]                 # mode 0 exact -> hit
    off = [[[x, 3.0] for x, _ in straight(10, 0)]] * 2       # 3 m lateral error -> miss
    stay = [[[0, 40]] * 3] * 2
    return make_detections(
        [box(0, 0), box(10, 0), box(0, 40), box(0, -40), box(30, 0)],
        [0.9, 0.8, 0.7, 0.1, 0.6],
        [0, 0, 0, 0, 0],
        [perfect, off, stay, stay, stay],
    )


def test_prediction_metrics_with_false_positives_and_unmatched_gt():
    scene = scene_with_futures()
    evaluator = Evaluator(EvalConfig(class_names=["car"], pred_score_threshold=0.3))
    evaluator.update([detections_for(scene)], make_batch([scene]))
    m = evaluator.compute()
    # Matched with a future: GT0 (ADE=FDE=0, hit) and GT1 (ADE=FDE=3, miss). GT2: unmatched. GT3 has no
    # future: its detection is neither hit nor FP. FP: the 0.7 detection at (0, 40); the 0.1 one is
    # below the score threshold. N_GT = GT0..GT2 = 3. EPA = (1 - 0.5 * 1) / 3.
    assert (m["num_matched"], m["num_hits"], m["num_fp"], m["num_pred_gt"]) == (2, 1, 1, 3)
    assert m["minADE"] == pytest.approx(1.5) and m["minFDE"] == pytest.approx(1.5)
    assert m["MR"] == pytest.approx(0.5)
    assert m["EPA"] == pytest.approx(1 / 6) and m["EPA/car"] == pytest.approx(1 / 6)
    low = Evaluator(EvalConfig(class_names=["car"], pred_score_threshold=0.05))
    low.update([detections_for(scene)], make_batch([scene]))
    assert low.compute()["num_fp"] == 2 and low.compute()["EPA"] == pytest.approx(0.0)


def test_match_rule_iou_versus_centre_distance():
    scene = {"key": "s", "boxes": [box(0, 0, 4, 2)], "classes": [0], "future": [straight(0, 0)]}
    crossed = make_detections([box(0.5, 0, 4, 2, math.pi / 2)], [0.9], [0], [[straight(0, 0)]], horizon=3)
    by_iou = Evaluator(EvalConfig(class_names=["car"], pred_match="iou"))
    by_iou.update([crossed], make_batch([scene]))
    m = by_iou.compute()  # IoU < 0.5: no match, the detection is a false positive
    assert (m["num_matched"], m["num_fp"], m["EPA"]) == (0, 1, 0.0) and math.isnan(m["minADE"])
    by_distance = Evaluator(EvalConfig(class_names=["car"], pred_match="distance", pred_match_distance=2.0))
    by_distance.update([crossed], make_batch([scene]))
    m = by_distance.compute()  # centre 0.5 m away: matched, exact trajectory -> hit
    assert (m["num_matched"], m["num_fp"], m["minADE"], m["EPA"]) == (1, 0, 0.0, 1.0)


def test_prediction_matching_is_class_aware_and_checks_horizon():
    scene = {"key": "s", "boxes": [box(0, 0)], "classes": [0]}
    evaluator = Evaluator(EvalConfig(class_names=["car", "ped"]))
    evaluator.update([make_detections([box(0, 0)], [0.9], [1])], make_batch([scene]))
    m = evaluator.compute()
    assert (m["num_matched"], m["num_fp"], m["EPA/car"]) == (0, 1, 0.0) and "EPA/ped" not in m
    with pytest.raises(ValueError, match="horizon"):
        evaluator.update([make_detections([box(0, 0)], [0.9], [0], horizon=5)], make_batch([scene]))


def test_eval_config_validation_names_the_field():
    for kwargs, field in [({"pred_match": "nearest"}, "pred_match"), ({"iou_thresholds": [0.0]}, "iou_thresholds"),
                          ({"class_names": ["a", "a"]}, "class_names"), ({"miss_threshold": 0}, "miss_threshold"),
                          ({"pred_score_threshold": 2}, "pred_score_threshold"), ({"epa_fp_weight": -1}, "epa_fp_weight"),
                          ({"pred_match_distance": 0}, "pred_match_distance"), ({"pred_match_iou": 0}, "pred_match_iou")]:
        with pytest.raises(ValueError, match=f"eval.{field}"):
            EvalConfig(**kwargs)


def test_eval_config_is_an_omegaconf_structured_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.structured(EvalConfig), {"class_names": ["car", "ped"], "pred_match": "distance"})
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, EvalConfig) and config.class_names == ["car", "ped"] and config.pred_match == "distance"
