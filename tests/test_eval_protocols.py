"""The evaluation protocols on hand-built cases where they differ: turbotrain (the default) against opencood
(AP) and vip3d (prediction); the evaluation range and AP by distance range."""

import math

import numpy as np
import pytest

from tests.test_eval_fixtures import box, make_batch, make_detections
from trainer.config_io import ConfigError, load_config
from trainer.eval import EvalConfig, Evaluator, format_table


def metrics_of(scenes, detections, **config):
    evaluator = Evaluator(EvalConfig(**{"class_names": ["car", "ped"], "iou_thresholds": [0.5], **config}))
    evaluator.update(detections, make_batch(scenes))
    return evaluator.compute()


def still(x, y, steps=3):
    return [[x, y]] * steps


def test_opencood_ap_keeps_frame_order_where_turbotrain_sorts_globally():
    scenes = [{"key": "a", "boxes": [box(0, 0)], "classes": [0]}, {"key": "b", "boxes": [box(0, 0)], "classes": [0]}]
    dets = [make_detections([box(0, 0), box(20, 20)], [0.5, 0.4], [0, 0]), make_detections([box(0, 0)], [0.9], [0])]
    # turbotrain: [0.9 TP, 0.5 TP, 0.4 FP] -> AP 1; opencood: frame a then b: [0.5 TP, 0.4 FP, 0.9 TP] -> 1/2 + 1/2 * 2/3
    assert metrics_of(scenes, dets)["AP@0.5"] == pytest.approx(1.0)
    assert metrics_of(scenes, dets, ap_protocol="opencood")["AP@0.5"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_opencood_ap_rounds_iou_to_float32():
    shift = float(np.float32(2 / 3))  # IoU (2 - s) / (2 + s) of two 2 x 1 boxes: 0.4999999963 in float64
    scenes = [{"key": "a", "boxes": [box(0, 0, l=2, w=1)], "classes": [0]}]
    dets = [make_detections([box(shift, 0, l=2, w=1)], [0.9], [0])]
    assert metrics_of(scenes, dets)["AP@0.5"] == 0.0  # below 0.5: a false positive
    assert metrics_of(scenes, dets, ap_protocol="opencood")["AP@0.5"] == 1.0  # float32: exactly 0.5, a match


def test_evaluation_range_keeps_boxes_by_the_protocols_rule():
    scenes = [{"key": "a", "boxes": [box(0, 0), box(9.5, 0)], "classes": [0, 0]}]  # the second straddles x = 10
    dets = [make_detections([box(0, 0), box(30, 0)], [0.9, 0.8], [0, 0])]  # the second lies outside the range
    whole = metrics_of(scenes, dets)
    assert whole["num_gt"] == 2 and whole["num_det"] == 2 and whole["AP@0.5"] == pytest.approx(0.5)
    centre = metrics_of(scenes, dets, range=[-10, -10, 10, 10])  # centre rule: the straddling GT stays
    assert (centre["num_gt"], centre["num_det"], centre["AP@0.5"]) == (2, 1, pytest.approx(0.5))
    corners = metrics_of(scenes, dets, range=[-10, -10, 10, 10], ap_protocol="opencood")  # all corners: it goes
    assert (corners["num_gt"], corners["num_det"], corners["AP@0.5"]) == (1, 1, 1.0)


def test_ap_by_distance_range_matches_within_each_range():
    scenes = [{"key": "a", "boxes": [box(10, 0), box(40, 0), box(31, 0)], "classes": [0, 0, 0]}]
    # the 29.9 m detection overlaps the 31 m GT (IoU 0.57) but lies in the 0-30 m range
    dets = [make_detections([box(10, 0), box(40, 0), box(29.9, 0)], [0.9, 0.8, 0.95], [0, 0, 0])]
    m = metrics_of(scenes, dets, distance_bins=[0, 30, 50])
    assert m["AP@0.5"] == pytest.approx(1.0)
    assert m["AP[0-30m]@0.5"] == pytest.approx(0.5)  # [0.95 FP, 0.9 TP] against 1 GT
    assert m["AP[30-50m]@0.5/car"] == pytest.approx(0.5) and m["AP[30-50m]@0.5"] == pytest.approx(0.5)
    assert math.isnan(m["AP[50m+]@0.5"]) and "AP[50m+]@0.5/car" not in m
    assert "AP[0-30m]@0.5" not in metrics_of(scenes, dets)  # no bins, no range keys
    table = format_table(m)
    assert "AP 30-50m (%)" in table and "AP[" not in table  # one table per range, every range key in one


def test_vip3d_matches_class_agnostic_by_hungarian_assignment():
    scene = {"key": "a", "boxes": [box(0, 0), box(3.5, 0)], "classes": [0, 1],
             "future": [still(0, 0), still(3.5, 0)], "future_valid": [[True] * 3] * 2}
    # greedy (score order): the 0.9 detection takes the GT at 1.6 m, the 0.8 one finds it taken: 1 match, 1 FP;
    # Hungarian pairs 0.9 with the GT at 1.9 m and 0.8 with the one at 0.3 m; class-agnostic, so the ped GT counts
    dets = [make_detections([box(1.6, 0), box(-0.3, 0)], [0.9, 0.8], [0, 0],
                            [[still(3.5, 0)] * 2, [still(0, 0)] * 2])]
    turbo = metrics_of([scene], dets)
    assert (turbo["num_matched"], turbo["num_fp"], turbo["num_hits"]) == (1, 1, 0)
    assert turbo["EPA"] == 0.0 and turbo["minFDE"] == pytest.approx(3.5)
    vip = metrics_of([scene], dets, pred_protocol="vip3d")
    assert (vip["num_matched"], vip["num_fp"], vip["num_hits"]) == (2, 0, 2)
    assert vip["EPA"] == 1.0 and vip["minADE"] == 0.0 and vip["MR"] == 0.0


def test_vip3d_fde_needs_the_last_step_and_counts_no_false_positive_without_gt():
    scenes = [{"key": "a", "boxes": [box(0, 0)], "classes": [0], "future": [[[1, 0], [2, 0], [0, 0]]],
               "future_valid": [[True, True, False]]},
              {"key": "b", "boxes": [], "classes": []}]
    dets = [make_detections([box(0, 0), box(30, 30)], [0.9, 0.33], [0, 0], [[[[1, 0], [2, 1], [5, 5]]] * 2] * 2),
            make_detections([box(5, 5)], [0.8], [0])]
    turbo = metrics_of(scenes, dets)
    # FDE at the last valid step (1 m), N_GT 1, false positives: the 0.33 one (>= 0.3) and the GT-less frame's
    assert (turbo["num_pred_gt"], turbo["num_fp"], turbo["num_hits"]) == (1, 2, 1)
    assert turbo["minADE"] == pytest.approx(0.5) and turbo["minFDE"] == pytest.approx(1.0) and turbo["EPA"] == 0.0
    vip = metrics_of(scenes, dets, pred_protocol="vip3d")
    # last step invalid: no FDE, not in N_GT; 0.33 < 0.35 is ignored; frame b has no GT: no false positive
    assert (vip["num_pred_gt"], vip["num_fp"], vip["num_hits"], vip["num_matched"]) == (0, 0, 0, 1)
    assert vip["minADE"] == pytest.approx(0.5) and vip["minFDE"] == 0.0 and vip["MR"] == 0.0  # means of nothing: 0
    assert math.isnan(vip["EPA"])  # (0 - 0) / 0, as ViP3D
    nothing = metrics_of(scenes[:1], [make_detections([box(50, 50)], [0.9], [0])], pred_protocol="vip3d")
    assert nothing["minADE"] == 0.0 and math.isnan(metrics_of(scenes[:1], [make_detections([box(50, 50)], [0.9], [0])])
                                                   ["minADE"])


def test_protocol_config_is_validated_and_loads_by_name():
    for fields, message in [({"ap_protocol": "kitti"}, "ap_protocol must be one of"),
                            ({"pred_protocol": "vip3d", "pred_match": "iou"}, "matches by centre distance"),
                            ({"range": [10, 0, -10, 5]}, "eval.range"), ({"distance_bins": [30, 0]}, "increasing")]:
        with pytest.raises(ValueError, match=message):
            EvalConfig(**fields)
    cfg = load_config(None, ["eval.ap_protocol=opencood", "eval.pred_protocol=vip3d", "eval.distance_bins=[0,30,50]"])
    assert cfg.eval.ap_rules.global_sort is False and cfg.eval.score_cut == 0.35
    assert EvalConfig().score_cut == 0.3 and EvalConfig(pred_protocol="vip3d", pred_score_threshold=0.5).score_cut == 0.5
    with pytest.raises(ConfigError, match="pred_protocol"):
        load_config(None, ["eval.pred_protocol=nuscenes"])
