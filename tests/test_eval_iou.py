"""Rotated BEV IoU against hand-computed polygons and an independent Monte Carlo estimate."""

import math

import numpy as np
import pytest
import torch

from tests.test_eval_fixtures import box
from trainer.eval.iou import bev_iou, box_corners_bev, centre_distance_bev


def iou1(a, b) -> float:
    return float(bev_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])


def test_identical_boxes_have_iou_one():
    for yaw in (0.0, 0.3, math.pi / 2, -2.0):
        assert iou1(box(3, -1, 4, 2, yaw), box(3, -1, 4, 2, yaw)) == pytest.approx(1.0, abs=1e-6)


def test_disjoint_and_touching_boxes_have_iou_zero():
    assert iou1(box(0, 0), box(10, 10)) == 0.0
    assert iou1(box(0, 0, 2, 2), box(2, 0, 2, 2)) == pytest.approx(0.0, abs=1e-6)  # shared edge
    assert iou1(box(0, 0, 2, 2), box(2, 2, 2, 2)) == pytest.approx(0.0, abs=1e-6)  # shared corner
    # Close, inside each other's circumscribed circles, but separated: a 45deg square's corner gap.
    assert iou1(box(0, 0, 2, 2), box(2.5, 0, 1, 1, math.pi / 4)) == 0.0


def test_half_shifted_square():
    assert iou1(box(0, 0, 2, 2), box(1, 0, 2, 2)) == pytest.approx(2 / 6)
    assert iou1(box(0, 0, 2, 2), box(1, 1, 2, 2)) == pytest.approx(1 / 7)


def test_45_degree_square_overlap_is_the_regular_octagon():
    # Two 2x2 squares on one centre, one turned 45deg: the overlap is a regular octagon of area
    # 8(sqrt2 - 1); union = 8 - that; IoU = 1/sqrt2.
    assert iou1(box(0, 0, 2, 2), box(0, 0, 2, 2, math.pi / 4)) == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_crossed_rectangles_and_containment():
    assert iou1(box(0, 0, 4, 2), box(0, 0, 4, 2, math.pi / 2)) == pytest.approx(4 / 12)
    assert iou1(box(0, 0, 2, 2), box(0.2, -0.1, 1, 1, 0.3)) == pytest.approx(1 / 4)
    assert iou1(box(0.2, -0.1, 1, 1, 0.3), box(0, 0, 2, 2)) == pytest.approx(1 / 4)


def test_height_and_z_are_ignored():
    a, b = box(0, 0), box(1, 0)
    b[2], b[5] = 7.0, 0.1
    assert iou1(a, b) == pytest.approx(iou1(box(0, 0), box(1, 0)))


def monte_carlo_iou(a, b, rng, samples=400_000) -> float:
    lo = np.minimum(box_corners_bev(torch.tensor([a, b], dtype=torch.float64)).reshape(-1, 2).min(0).values, 0)
    hi = box_corners_bev(torch.tensor([a, b], dtype=torch.float64)).reshape(-1, 2).max(0).values
    pts = rng.uniform(lo.numpy(), hi.numpy(), size=(samples, 2))

    def inside(bx):
        c, s = math.cos(bx[6]), math.sin(bx[6])
        d = pts - np.array(bx[:2])
        u, v = d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c
        return (np.abs(u) <= bx[3] / 2) & (np.abs(v) <= bx[4] / 2)

    ia, ib = inside(a), inside(b)
    return (ia & ib).sum() / (ia | ib).sum()


def test_random_pairs_match_monte_carlo_and_pairwise_calls():
    rng = np.random.default_rng(0)
    boxes_a = [box(*rng.uniform(-2, 2, 2), *rng.uniform(1, 5, 2), rng.uniform(-3, 3)) for _ in range(4)]
    boxes_b = [box(*rng.uniform(-2, 2, 2), *rng.uniform(1, 5, 2), rng.uniform(-3, 3)) for _ in range(5)]
    matrix = bev_iou(torch.tensor(boxes_a, dtype=torch.float32), torch.tensor(boxes_b, dtype=torch.float32))
    assert matrix.shape == (4, 5) and matrix.dtype == torch.float32
    assert (matrix > 0).sum() >= 10  # the test really exercises overlaps
    for i, a in enumerate(boxes_a):
        for j, b in enumerate(boxes_b):
            assert float(matrix[i, j]) == pytest.approx(iou1(a, b), abs=1e-6)
            assert float(matrix[i, j]) == pytest.approx(iou1(b, a), abs=1e-6)
    for i, j in [(0, 0), (1, 2), (3, 4)]:
        assert float(matrix[i, j]) == pytest.approx(monte_carlo_iou(boxes_a[i], boxes_b[j], rng), abs=0.01)


def test_rigid_motion_of_both_boxes_keeps_iou():
    a, b = box(1, 0.5, 4, 2, 0.2), box(2, 1, 3, 1.5, 1.0)
    theta, shift = 1.1, np.array([30.0, -12.0])
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])

    def move(bx):
        xy = rot @ np.array(bx[:2]) + shift
        return [xy[0], xy[1], bx[2], bx[3], bx[4], bx[5], bx[6] + theta]

    assert iou1(move(a), move(b)) == pytest.approx(iou1(a, b), abs=1e-6)


def test_empty_inputs_and_bad_shapes():
    assert bev_iou(torch.zeros(0, 7), torch.zeros(3, 7)).shape == (0, 3)
    assert bev_iou(torch.zeros(2, 7), torch.zeros(0, 7)).shape == (2, 0)
    assert float(bev_iou(torch.zeros(1, 7), torch.zeros(1, 7))[0, 0]) == 0.0  # degenerate boxes
    with pytest.raises(ValueError, match="boxes_b must be"):
        bev_iou(torch.zeros(2, 7), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="boxes_a must be"):
        centre_distance_bev(torch.zeros(7), torch.zeros(2, 7))


def test_centre_distance():
    d = centre_distance_bev(torch.tensor([box(0, 0)]), torch.tensor([box(3, 4), box(0, 0)]))
    assert d.tolist() == [[pytest.approx(5.0), 0.0]]
