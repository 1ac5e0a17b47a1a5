"""The detection head's options: IoU-aware scoring (the paired BEV IoU target, the IoU branch's loss, score
rectification) and one branch per class (each object reads its own class's box codes)."""

import dataclasses

import pytest
import torch

from models.bev import BevGeometry
from models.box_coding import BOX_CODE_SIZE, class_codes, encode_boxes
from models.config import model_config
from models.decode import decode_detections, rectify_scores
from models.grid import GridConfig
from models.v2x_model import V2XModel
from tests.batch_factory import make_batch
from trainer.eval.iou import bev_iou, paired_bev_iou
from trainer.losses import task_losses
from trainer.losses.detection import box_regression_loss, iou_score_loss

GEOMETRY = BevGeometry.from_grid(GridConfig(x_range=[-8.0, 8.0], y_range=[-8.0, 8.0], z_range=[-3.0, 1.0],
                                            voxel_size=[0.8, 0.8, 1.0], max_points_per_voxel=4, max_voxels=100), 2)


def test_paired_iou_is_the_diagonal_of_the_iou_matrix():
    a = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0], [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.4],
                      [5.0, 5.0, 0.0, 2.0, 2.0, 1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0], [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.4],
                      [-5.0, 5.0, 0.0, 2.0, 2.0, 1.0, 0.0]])
    paired = paired_bev_iou(a, b)
    assert torch.allclose(paired, torch.diagonal(bev_iou(a, b)))
    assert paired.tolist() == pytest.approx([6.0 / 10.0, 1.0, 0.0], abs=1e-6)  # 3x2 overlap of two 4x2 boxes
    with pytest.raises(ValueError, match="equal counts"):
        paired_bev_iou(a, b[:2])


def _objects():
    boxes = torch.tensor([[[1.0, 2.0, -1.0, 4.5, 1.9, 1.6, 0.3], [-3.0, 0.5, -1.0, 0.8, 0.8, 1.7, 0.0]]])
    cells = torch.floor(GEOMETRY.metric_to_cell(boxes[..., :2])).long()
    codes = torch.zeros(1, BOX_CODE_SIZE, GEOMETRY.height, GEOMETRY.width)
    target = encode_boxes(boxes, cells, GEOMETRY)
    for m in range(2):
        codes[0, :, cells[0, m, 1], cells[0, m, 0]] = target[0, m]
    return boxes, cells, codes


def test_iou_loss_targets_the_decoded_boxes_iou_and_ignores_unusable_objects():
    boxes, cells, codes = _objects()
    codes[0, 0, cells[0, 1, 1], cells[0, 1, 0]] += 0.5  # object 1 decoded half a cell off in x
    shifted = boxes[0, 1].clone()
    shifted[0] += 0.5 * GEOMETRY.cell_x
    expected_iou = float(paired_bev_iou(shifted[None], boxes[0, 1][None])[0])
    assert 0.0 < expected_iou < 1.0
    logits = torch.zeros(1, 1, GEOMETRY.height, GEOMETRY.width, requires_grad=True)
    only_second = torch.tensor([[False, True]])
    loss = iou_score_loss(logits, codes, boxes, cells, only_second, GEOMETRY)
    bce_at_half = torch.nn.functional.binary_cross_entropy(torch.tensor(0.5), torch.tensor(expected_iou))
    assert loss.item() == pytest.approx(bce_at_half.item(), rel=1e-5)
    loss.backward()  # d BCE / d logit = sigmoid(0) - target, at the object's cell only
    grad = logits.grad[0, 0]
    assert grad[cells[0, 1, 1], cells[0, 1, 0]].item() == pytest.approx(0.5 - expected_iou, rel=1e-5)
    assert grad.abs().sum().item() == pytest.approx(abs(0.5 - expected_iou), rel=1e-5)
    assert iou_score_loss(logits, codes, boxes, cells, torch.zeros_like(only_second), GEOMETRY).item() == 0.0


def test_rectify_scores_ranks_by_heatmap_and_iou():
    scores, iou = torch.tensor([0.8, 0.6]), torch.tensor([0.2, 0.9])
    assert torch.equal(rectify_scores(scores, iou, 0.0), scores)
    rectified = rectify_scores(scores, iou, 0.5)
    assert rectified.tolist() == pytest.approx([(0.8 * 0.2) ** 0.5, (0.6 * 0.9) ** 0.5])
    assert rectified[1] > rectified[0]  # the better-placed box now ranks first


def test_model_with_iou_branch_trains_and_decodes_rectified_scores():
    config = dataclasses.replace(model_config("tiny"), history=2, iou_rectifier=0.5)
    with pytest.raises(ValueError, match="iou_rectifier"):
        dataclasses.replace(config, iou_rectifier=1.0)
    torch.manual_seed(0)
    model = V2XModel(config).eval()
    batch = make_batch(config, num_scenes=2, agents=2, ground_points=150, seed=3)
    out = model(batch)
    assert out.iou_logits.shape == (2, 1, *out.heatmap.shape[2:])
    losses = task_losses(out, batch, model.geometry)
    assert losses.iou.item() > 0
    losses.total.backward()
    assert model.det_head.iou[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        plain = decode_detections(out, model.geometry, score_threshold=0.0, max_detections=10)
        rectified = decode_detections(out, model.geometry, score_threshold=0.0, max_detections=10, iou_rectifier=0.5)
    heat, iou = torch.sigmoid(out.heatmap), torch.sigmoid(out.iou_logits)
    for scene, (p, r) in enumerate(zip(plain, rectified)):
        assert (r.scores[:-1] >= r.scores[1:]).all()
        for box, score in zip(r.boxes, r.scores):  # each rectified score = heat^0.5 * iou^0.5 at some peak
            assert any(torch.isclose(score, (h * iou[scene, 0]).sqrt()).any() for h in heat[scene])
        assert not torch.allclose(p.scores[: len(r.scores)], r.scores)
    without = V2XModel(dataclasses.replace(config, iou_rectifier=0.0))
    assert without.det_head.iou is None
    with pytest.raises(ValueError, match="IoU branch"):
        decode_detections(without(batch), without.geometry, iou_rectifier=0.5)


def test_class_codes_selects_each_objects_own_class():
    codes = torch.arange(2 * 3 * 3 * BOX_CODE_SIZE, dtype=torch.float32).view(2, 3, 3 * BOX_CODE_SIZE)
    classes = torch.tensor([[0, 2, 1], [1, 1, 0]])
    picked = class_codes(codes, classes)
    for b in range(2):
        for m in range(3):
            k = int(classes[b, m])
            assert torch.equal(picked[b, m], codes[b, m, k * BOX_CODE_SIZE:(k + 1) * BOX_CODE_SIZE])
    assert torch.equal(class_codes(codes[..., :BOX_CODE_SIZE], classes), codes[..., :BOX_CODE_SIZE])


def test_per_class_box_loss_reads_only_the_objects_class():
    boxes, cells, shared = _objects()
    classes = torch.tensor([[0, 1]])
    per_class = torch.randn(1, 2 * BOX_CODE_SIZE, GEOMETRY.height, GEOMETRY.width)
    for m in range(2):  # each object's own class slot holds its exact codes, the other slot noise
        k = int(classes[0, m])
        per_class[0, k * BOX_CODE_SIZE:(k + 1) * BOX_CODE_SIZE, cells[0, m, 1], cells[0, m, 0]] = \
            shared[0, :, cells[0, m, 1], cells[0, m, 0]]
    usable = torch.ones(1, 2, dtype=torch.bool)
    assert box_regression_loss(per_class, boxes, cells, usable, GEOMETRY, gt_classes=classes).item() == \
        pytest.approx(0.0, abs=1e-6)
    assert box_regression_loss(per_class, boxes, cells, usable, GEOMETRY, gt_classes=1 - classes).item() > 0.1
    with pytest.raises(ValueError, match="gt_classes"):
        box_regression_loss(per_class, boxes, cells, usable, GEOMETRY)


def test_model_with_class_heads_has_per_class_codes_and_decodes_its_labels_codes():
    config = dataclasses.replace(model_config("tiny"), history=2, class_heads=True)
    torch.manual_seed(0)
    model = V2XModel(config).eval()
    assert len(model.det_head.heatmap) == len(model.det_head.regression) == config.num_classes
    batch = make_batch(config, num_scenes=1, agents=2, ground_points=150, seed=4)
    with torch.no_grad():
        out = model(batch)
        scene = decode_detections(out, model.geometry, score_threshold=0.0, max_detections=10)[0]
    h, w = out.heatmap.shape[2:]
    assert out.box_codes.shape == (1, config.num_classes * BOX_CODE_SIZE, h, w)
    cells = torch.floor(model.geometry.metric_to_cell(scene.boxes[:, :2])).long()
    for box, label, cell in zip(scene.boxes, scene.labels, cells):
        own = out.box_codes[0, label * BOX_CODE_SIZE:(label + 1) * BOX_CODE_SIZE, cell[1], cell[0]]
        assert torch.isclose(torch.log(box[3]), own[3].clamp(max=6.0), atol=1e-4)  # log length of its class
    losses = task_losses(model.train()(batch), batch, model.geometry)
    losses.total.backward()
    assert all(branch[-1].weight.grad.abs().sum() > 0 for branch in model.det_head.heatmap)
