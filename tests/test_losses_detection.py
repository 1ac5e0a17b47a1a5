"""The detection losses at CenterPoint's standard: per-code L1 at object centres, code-weighted and summed."""

import pytest
import torch

from models.bev import BevGeometry
from models.box_coding import BOX_CODE_SIZE, encode_boxes
from models.grid import GridConfig
from trainer.losses.config import TaskLossConfig
from trainer.losses.detection import box_regression_loss

GEOMETRY = BevGeometry.from_grid(GridConfig(x_range=[-8.0, 8.0], y_range=[-8.0, 8.0], z_range=[-3.0, 1.0],
                                            voxel_size=[0.8, 0.8, 1.0], max_points_per_voxel=4, max_voxels=100), 2)


def _setup():
    boxes = torch.tensor([[[1.0, 2.0, -1.0, 4.5, 1.9, 1.6, 0.3], [-3.0, 0.5, -1.0, 0.8, 0.8, 1.7, 0.0],
                           [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]]])  # [1, 3, 7]
    cells = torch.floor(GEOMETRY.metric_to_cell(boxes[..., :2])).long()
    usable = torch.tensor([[True, True, False]])
    codes = torch.zeros(1, BOX_CODE_SIZE, GEOMETRY.height, GEOMETRY.width)
    target = encode_boxes(boxes, cells, GEOMETRY)
    for m in range(2):  # exact codes, then a known error per code at each usable object
        codes[0, :, cells[0, m, 1], cells[0, m, 0]] = target[0, m] + torch.arange(1, 9) * 0.1 * (m + 1)
    return codes, boxes, cells, usable


def test_box_loss_sums_per_code_l1_over_codes_divided_by_objects():
    codes, boxes, cells, usable = _setup()
    # object 0 errs by 0.1 * k on code k, object 1 by 0.2 * k; the third object is not usable
    per_code = (torch.arange(1, 9) * 0.1 + torch.arange(1, 9) * 0.2) / 2
    loss = box_regression_loss(codes, boxes, cells, usable, GEOMETRY)
    assert loss.item() == pytest.approx(per_code.sum().item(), rel=1e-5)
    weights = torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 2.0, 2.0])
    weighted = box_regression_loss(codes, boxes, cells, usable, GEOMETRY, weights)
    assert weighted.item() == pytest.approx((per_code * weights).sum().item(), rel=1e-5)


def test_box_loss_is_zero_at_exact_codes_and_without_objects():
    codes, boxes, cells, usable = _setup()
    exact = codes.clone()
    target = encode_boxes(boxes, cells, GEOMETRY)
    for m in range(2):
        exact[0, :, cells[0, m, 1], cells[0, m, 0]] = target[0, m]
    assert box_regression_loss(exact, boxes, cells, usable, GEOMETRY).item() == pytest.approx(0.0, abs=1e-6)
    assert box_regression_loss(codes, boxes, cells, torch.zeros_like(usable), GEOMETRY).item() == 0.0


def test_box_loss_rejects_wrong_code_weights():
    codes, boxes, cells, usable = _setup()
    with pytest.raises(ValueError, match="code_weights"):
        box_regression_loss(codes, boxes, cells, usable, GEOMETRY, torch.ones(7))


@pytest.mark.parametrize("kwargs", [{"code_weights": [1.0] * 7}, {"code_weights": [1.0] * 7 + [-1.0]},
                                    {"box_weight": -1.0}])
def test_loss_config_rejects_bad_weights(kwargs):
    with pytest.raises(ValueError):
        TaskLossConfig(**kwargs)


def test_min_radius_is_stated_in_metres_and_rounded_to_cells():
    cfg = TaskLossConfig()
    assert cfg.min_radius_cells(0.8) == 2  # CenterPoint's 2 cells at Waymo's 0.8 m
    assert cfg.min_radius_cells(1.6) == 1 and cfg.min_radius_cells(6.0) == 1
    assert TaskLossConfig(min_radius_m=0.0).min_radius_cells(0.8) == 0
    with pytest.raises(ValueError, match="min_radius_m"):
        TaskLossConfig(min_radius_m=-1.0)
