"""The point-based box refinement: its pure pieces (points to the ego frame, the points of a box in the box's
frame, residual coding), an untrained head leaving boxes as they are, a head that learns to place boxes from
points, and the training and evaluation paths of a model that has one."""

import dataclasses
import math

import pytest
import torch

from models.config import model_config
from models.point_refine import (PointRefineHead, apply_residuals, encode_residuals, proposal_points,
                                 scene_points)
from models.v2x_model import V2XModel
from tests.batch_factory import make_batch
from trainer.eval.iou import paired_bev_iou
from trainer.eval.model_eval import predict_scenes
from trainer.losses import task_losses
from trainer.losses.refinement import refinement_loss, with_refinement


def _rot(yaw: float) -> torch.Tensor:
    return torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])


def test_proposal_points_are_the_points_in_reach_in_the_box_frame():
    box = torch.tensor([[10.0, -2.0, -1.0, 2.0, 1.0, 1.5, math.pi / 2]])  # long axis along +y
    local = torch.tensor([[0.9, 0.0], [0.0, 0.4], [-0.5, -0.2], [1.6, 0.0], [0.0, 1.2]])  # (u, v) in the box
    xy = local @ _rot(math.pi / 2).T + box[0, :2]
    points = torch.cat((xy, torch.tensor([[-1.0, 0.3], [-0.5, 0.6], [-1.2, 0.1], [-1.0, 0.2], [-1.0, 0.9]])), dim=1)
    points = torch.cat((points, torch.tensor([[10.0, -2.0, 5.0, 0.0]])))  # above the box: out of reach
    features, mask, count = proposal_points(points, box, num=8, margin=0.5)
    assert count.tolist() == [3]  # (1.6, 0) is 0.6 past the half length + margin; (0, 1.2) 0.2 past the width
    assert mask[0].tolist() == [True] * 3 + [False] * 5
    expected = torch.tensor([[0.9, 0.0, 0.0, 0.3, 0.9, 0.0], [0.0, 0.4, 0.5, 0.6, 0.0, 0.8],
                             [-0.5, -0.2, -0.2, 0.1, -0.5, -0.4]])
    assert torch.allclose(features[0, :3], expected, atol=1e-5)
    assert features[0, 3:].abs().sum() == 0
    wider = proposal_points(points, box, num=8, margin=1.5)[2]
    assert wider.tolist() == [5]  # a wider margin along the length and width; the point 6 m up stays out


def test_proposal_points_keep_an_even_spread_when_there_are_too_many():
    box = torch.tensor([[0.0, 0.0, 0.0, 4.0, 1.0, 2.0, 0.0]])
    u = torch.linspace(-1.9, 1.9, 40)
    points = torch.stack((u, torch.zeros(40), torch.zeros(40), torch.arange(40.0)), dim=1)
    features, mask, count = proposal_points(points, box, num=8)
    assert count.tolist() == [40] and mask.all()
    assert features[0, :, 3].tolist() == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0]  # every fifth, in order
    empty_f, empty_m, empty_c = proposal_points(points[:0], box, num=8)
    assert empty_f.shape == (1, 8, 6) and not empty_m.any() and empty_c.tolist() == [0]


def test_residuals_round_trip_and_are_in_the_proposal_frame():
    torch.manual_seed(0)
    proposals = torch.cat((torch.randn(20, 3) * 5, torch.rand(20, 3) * 4 + 0.3, (torch.rand(20, 1) - 0.5) * 6), 1)
    targets = proposals + torch.cat((torch.randn(20, 3) * 0.3, torch.zeros(20, 3), torch.randn(20, 1) * 0.3), 1)
    targets[:, 3:6] *= torch.rand(20, 3) + 0.5
    refined = apply_residuals(proposals, encode_residuals(proposals, targets))
    assert torch.allclose(refined[:, :6], targets[:, :6], atol=1e-4)
    assert torch.allclose(torch.sin(refined[:, 6] - targets[:, 6]), torch.zeros(20), atol=1e-5)
    ahead = torch.tensor([[0.0, 0.0, 0.0, 2.0, 1.0, 1.0, math.pi / 2]])  # a box facing +y, target 1 m further on
    moved = ahead.clone()
    moved[0, 1] = 1.0
    assert torch.allclose(encode_residuals(ahead, moved)[0, :2], torch.tensor([1.0, 0.0]), atol=1e-6)


def test_scene_points_are_each_scenes_current_points_in_the_ego_frame():
    config = dataclasses.replace(model_config("tiny"), history=2)
    batch = make_batch(config, num_scenes=2, agents=2, ground_points=40, seed=1)
    batch.agent_to_ego[1, 1] = torch.tensor([[0.0, -1.0, 3.0], [1.0, 0.0, -2.0], [0.0, 0.0, 1.0]])  # 90 deg + shift
    points = scene_points(batch)
    n = batch.voxel_coords[:, 0].long()
    for scene in range(2):
        expected = []
        for agent in range(2):
            rows = n == (scene * batch.max_agents + agent) * 2 + 1  # (scene, agent, current frame)
            p = torch.cat([batch.voxels[r, :k] for r, k in zip(rows.nonzero().squeeze(1).tolist(),
                                                                batch.voxel_num_points[rows].tolist())]
                          + [batch.voxels.new_zeros(0, 4)])
            m = batch.agent_to_ego[scene, agent]
            expected.append(torch.cat((p[:, :2] @ m[:2, :2].T + m[:2, 2], p[:, 2:]), dim=1))
        assert len(expected[0]) and torch.allclose(points[scene], torch.cat(expected), atol=1e-5)


def test_an_untrained_head_leaves_boxes_as_they_are():
    head = PointRefineHead(num_classes=3, hidden=8, points=16)
    boxes = torch.tensor([[1.0, 2.0, -1.0, 4.0, 2.0, 1.5, 0.4], [-3.0, 0.0, -1.0, 0.6, 0.6, 1.7, -1.0]])
    points = torch.cat((torch.randn(50, 3), torch.rand(50, 1)), dim=1)
    refined = apply_residuals(boxes, head(points, boxes, torch.tensor([0, 1])))
    assert torch.allclose(refined, boxes, atol=1e-6)


def _pedestrian_scene(generator: torch.Generator, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on the sensor-facing half of a 0.56 m pedestrian box at a random place and yaw (sensor at the
    origin), and that box [7]."""
    centre = (torch.rand(2, generator=generator) - 0.5) * 30
    yaw = float((torch.rand(1, generator=generator) - 0.5) * 2 * math.pi)
    box = torch.tensor([*centre.tolist(), -1.0, 0.56, 0.56, 1.7, yaw])
    toward = -centre / centre.norm()  # from the box towards the sensor
    side = torch.tensor([-toward[1], toward[0]])
    s = (torch.rand(n, generator=generator) - 0.5) * 0.5
    depth = (0.28 - s.abs() * 0.6) + torch.randn(n, generator=generator) * 0.01
    xy = centre + depth[:, None] * toward + s[:, None] * side
    z = -1.0 + (torch.rand(n, generator=generator) - 0.5) * 1.6
    return torch.cat((xy, z[:, None], torch.rand(n, 1, generator=generator)), dim=1), box


def test_the_head_learns_to_place_pedestrians_from_their_points():
    """Proposals 0.25 m off (none at IoU 0.5 on a 0.56 m box) are moved onto the boxes the points come from:
    on held-out scenes the refinement at least halves the centre error and puts most boxes at IoU >= 0.5."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    head = PointRefineHead(num_classes=3, hidden=32, points=32)
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)

    def draw(count):
        scenes = [_pedestrian_scene(generator) for _ in range(count)]
        boxes = torch.stack([b for _, b in scenes])
        angle = torch.rand(count, generator=generator) * 2 * math.pi
        proposals = boxes.clone()
        proposals[:, :2] += 0.25 * torch.stack((torch.cos(angle), torch.sin(angle)), dim=1)
        points = torch.cat([p for p, _ in scenes])
        return points, proposals, boxes

    labels = torch.ones(64, dtype=torch.long)
    for _ in range(300):
        points, proposals, boxes = draw(64)
        residuals = head(points, proposals, labels)
        loss = refinement_loss(residuals[None], proposals[None], boxes[None], torch.ones(1, 64, dtype=torch.bool))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        points, proposals, boxes = draw(64)
        refined = apply_residuals(proposals, head(points, proposals, labels))
    before = paired_bev_iou(proposals, boxes)
    after = paired_bev_iou(refined, boxes)
    error = (refined[:, :2] - boxes[:, :2]).norm(dim=1)
    assert float((before >= 0.5).float().mean()) == 0.0
    assert float(error.median()) < 0.125 and float((after >= 0.5).float().mean()) > 0.6


def test_a_model_with_refinement_trains_it_and_refines_its_detections():
    config = dataclasses.replace(model_config("tiny"), history=2, refine_points=16)
    with pytest.raises(ValueError, match="refine_points"):
        dataclasses.replace(config, refine_points=-1)
    torch.manual_seed(0)
    model = V2XModel(config)
    batch = make_batch(config, num_scenes=2, agents=2, ground_points=150, seed=3)
    out = with_refinement(model, model(batch), batch)
    assert out.refine_residuals.shape == (*batch.gt_classes.shape, 8)
    assert not out.refine_proposals.requires_grad  # the refinement trains only its own head
    losses = task_losses(out, batch, model.geometry)
    assert losses.refine > 0
    losses.total.backward()
    refine_grads = [p.grad for p in model.refine_head.parameters()]
    assert all(g is not None for g in refine_grads) and refine_grads[-1].abs().sum() > 0
    with torch.no_grad():  # move every box by the head's output bias: the decoded detections move with it
        model.refine_head.box_mlp[-1].bias[0] = 0.5
    model.eval()
    plain = dataclasses.replace(config, refine_points=0)
    without = V2XModel(plain).eval()
    without.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("refine_head")})
    refined, unrefined = predict_scenes(model, batch)[0], predict_scenes(without, batch)[0]
    assert len(refined.boxes) == len(unrefined.boxes) > 0
    expected = unrefined.boxes.clone()
    expected[:, 0] += 0.5 * torch.cos(expected[:, 6])
    expected[:, 1] += 0.5 * torch.sin(expected[:, 6])
    order = lambda b: b[:, 0].argsort()  # noqa: E731 (NMS may order the moved boxes differently)
    assert torch.allclose(refined.boxes[order(refined.boxes)], expected[order(expected)], atol=1e-4)
