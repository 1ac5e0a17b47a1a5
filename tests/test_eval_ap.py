"""Detection AP: greedy per-frame matching, global score sort, VOC all-point interpolation."""

import math

import numpy as np
import pytest

from tests.test_eval_fixtures import box, make_batch, make_detections
from trainer.eval import EvalConfig, Evaluator, average_precision, greedy_match, voc_average_precision

CONFIG = EvalConfig(class_names=["car", "ped"])
FAR = box(40, 30)


def evaluate(scenes, detections, config=CONFIG):
    evaluator = Evaluator(config)
    evaluator.update(detections, make_batch(scenes))
    return evaluator.compute()


def test_voc_ap_hand_values():
    assert voc_average_precision(np.array([1, 1, 1], bool), 3) == pytest.approx(1.0)
    # Recall .5, .5, 1 with precision 1, .5, 2/3 -> envelope 1, 2/3, 2/3 -> .5 * 1 + .5 * 2/3.
    assert voc_average_precision(np.array([1, 0, 1], bool), 2) == pytest.approx(5 / 6)
    assert voc_average_precision(np.array([0, 1, 1], bool), 2) == pytest.approx(2 / 3)
    assert voc_average_precision(np.zeros(0, bool), 2) == 0.0
    with pytest.raises(ValueError, match="num_gt"):
        voc_average_precision(np.ones(1, bool), 0)
    with pytest.raises(ValueError, match="exceed"):
        voc_average_precision(np.ones(3, bool), 2)


def test_average_precision_sorts_all_frames_globally():
    # Frame 0: TP at 0.6. Frame 1: FP at 0.9, TP at 0.5. Global order FP, TP, TP -> AP 2/3;
    # concatenating frames without the global sort would give TP, FP, TP -> 5/6.
    ap = average_precision([np.array([0.6]), np.array([0.9, 0.5])], [np.array([True]), np.array([False, True])], 2)
    assert ap == pytest.approx(2 / 3)
    assert math.isnan(average_precision([], [], 0))
    with pytest.raises(ValueError, match="same frames"):
        average_precision([np.ones(1)], [], 1)


def test_greedy_match_highest_score_first_takes_best_affinity():
    iou = np.array([[0.6, 0.9], [0.1, 0.95]])
    matched = greedy_match(np.array([0.2, 0.8]), iou, iou >= 0.5)
    assert matched.tolist() == [0, 1]  # det 1 (score .8) takes GT 1 first; det 0 falls back to GT 0
    matched = greedy_match(np.array([0.9, 0.8]), iou, iou >= 0.7)
    assert matched.tolist() == [1, -1]
    with pytest.raises(ValueError, match="allowed"):
        greedy_match(np.ones(2), iou, np.ones((2, 3), bool))


def test_perfect_detections_give_one_and_none_give_zero():
    scenes = [{"key": f"s{i}", "boxes": [box(i, 0), box(i, 10, yaw=1.0)], "classes": [0, 1]} for i in range(3)]
    perfect = [make_detections(s["boxes"], [0.9, 0.8], [0, 1]) for s in scenes]
    metrics = evaluate(scenes, perfect)
    for t in ("0.3", "0.5", "0.7"):
        assert metrics[f"AP@{t}"] == pytest.approx(1.0)
        assert metrics[f"AP@{t}/car"] == metrics[f"AP@{t}/ped"] == pytest.approx(1.0)
    empty = [make_detections(np.zeros((0, 7)), [], []) for _ in scenes]
    metrics = evaluate(scenes, empty)
    assert metrics["AP@0.5"] == 0.0 and metrics["AP@0.5/car"] == 0.0
    assert metrics["num_gt"] == 6 and metrics["num_det"] == 0 and metrics["num_frames"] == 3


def test_known_mix_and_score_order():
    scene = {"key": "a", "boxes": [box(0, 0), box(10, 0)], "classes": [0, 0]}
    mix = make_detections([box(0, 0), FAR, box(10, 0)], [0.9, 0.8, 0.7], [0, 0, 0])
    assert evaluate([scene], [mix])["AP@0.5"] == pytest.approx(5 / 6)
    fp_first = make_detections([box(0, 0), FAR, box(10, 0)], [0.7, 0.9, 0.8], [0, 0, 0])
    assert evaluate([scene], [fp_first])["AP@0.5"] == pytest.approx(2 / 3)


def test_duplicate_and_wrong_class_detections_are_false_positives():
    scene = {"key": "a", "boxes": [box(0, 0)], "classes": [0]}
    dup = make_detections([box(0, 0), box(0.1, 0)], [0.9, 0.95], [0, 0])
    assert evaluate([scene], [dup])["AP@0.5"] == pytest.approx(1.0)  # best-scored one is the TP
    dup = make_detections([box(0, 0), box(0.1, 0), box(0, 0)], [0.8, 0.95, 0.9], [0, 1, 0])
    metrics = evaluate([scene], [dup])
    assert metrics["AP@0.5/car"] == pytest.approx(1.0)
    assert "AP@0.5/ped" not in metrics  # no pedestrian ground truth: not in the mean either
    assert metrics["AP@0.5"] == pytest.approx(1.0)
    wrong = make_detections([box(0, 0)], [0.9], [1])
    assert evaluate([scene], [wrong])["AP@0.5"] == 0.0


def test_iou_thresholds_separate_loose_and_tight_boxes():
    scene = {"key": "a", "boxes": [box(0, 0, 4, 2)], "classes": [0]}
    shifted = make_detections([box(1, 0, 4, 2)], [0.9], [0])  # IoU = 3 / 5 = 0.6
    metrics = evaluate([scene], [shifted])
    assert (metrics["AP@0.3"], metrics["AP@0.5"], metrics["AP@0.7"]) == (1.0, 1.0, 0.0)


def test_mean_is_over_classes_with_ground_truth():
    scene = {"key": "a", "boxes": [box(0, 0), box(10, 10)], "classes": [0, 1]}
    only_car = make_detections([box(0, 0)], [0.9], [0])
    metrics = evaluate([scene], [only_car])
    assert metrics["AP@0.5/car"] == 1.0 and metrics["AP@0.5/ped"] == 0.0 and metrics["AP@0.5"] == 0.5


def test_labels_outside_class_names_are_rejected():
    scene = {"key": "a", "boxes": [box(0, 0)], "classes": [0]}
    with pytest.raises(ValueError, match="detections.labels"):
        evaluate([scene], [make_detections([box(0, 0)], [0.9], [2])])
    with pytest.raises(ValueError, match="gt_classes"):
        evaluate([{"key": "b", "boxes": [box(0, 0)], "classes": [3]}], [make_detections(np.zeros((0, 7)), [], [])])
    with pytest.raises(ValueError, match="one SceneDetections"):
        evaluate([scene], [])
