"""The track stage: its pure pieces (past proposals, box-frame coding, past positions of the dense head, points of a
history frame), a decoder that learns futures from tracks, and the training and evaluation paths of a model."""

import dataclasses
import math

import pytest
import torch

from models.config import model_config
from models.heads import PredictionHead
from models.point_refine import scene_points
from models.track_decode import (TRACK_PASSES, TrackDecoder, backward_prior, from_box_frame, read_past_offsets,
                                 to_box_frame)
from models.v2x_model import V2XModel
from tests.batch_factory import make_batch
from trainer.eval.model_eval import predict_scenes
from trainer.losses import task_losses
from trainer.losses.refinement import with_refinement
from trainer.losses.track import with_tracks


def _config(**changes):
    return dataclasses.replace(model_config("tiny"), history=3, refine_points=16, track_decoder=True, **changes)


def test_box_frame_coding_round_trips_and_points_along_the_heading():
    boxes = torch.tensor([[10.0, -2.0, 0.0, 4.0, 2.0, 1.5, math.pi / 2], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, -0.3]])
    ahead = torch.tensor([[[10.0, 1.0]], [[math.cos(-0.3), math.sin(-0.3)]]])  # 3 m and 1 m ahead of each box
    uv = to_box_frame(ahead, boxes)
    assert torch.allclose(uv, torch.tensor([[[3.0, 0.0]], [[1.0, 0.0]]]), atol=1e-6)
    xy = torch.randn(2, 4, 3, 2)
    assert torch.allclose(from_box_frame(to_box_frame(xy, boxes), boxes), xy, atol=1e-5)


def test_backward_prior_extrapolates_at_constant_velocity():
    next_xy, after_xy = torch.tensor([[4.0, 1.0], [0.0, 0.0]]), torch.tensor([[6.0, 2.0], [0.0, 0.0]])
    assert torch.equal(backward_prior(next_xy, after_xy), torch.tensor([[2.0, 0.0], [0.0, 0.0]]))


def test_frames_are_placed_newest_first_from_the_coarse_position_then_by_extrapolation():
    config = _config()
    model = V2XModel(config)  # an untrained track refinement leaves every proposal where it is
    boxes = torch.tensor([[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0], [0.0, 5.0, -1.0, 0.6, 0.6, 1.7, 1.0]])
    coarse = torch.tensor([[[-9.0, 0.5], [-4.0, 0.0]], [[0.0, -1.0], [0.0, -0.5]]])  # [N, S=2, 2], oldest first
    points = [torch.randn(30, 4), torch.randn(30, 4)]
    proposals, residuals, trajectories, logits = model.track_futures(points, boxes, torch.tensor([0, 1]), coarse)
    assert proposals.shape == (2, 2, TRACK_PASSES, 7) and residuals.shape == (2, 2, TRACK_PASSES, 8)
    assert trajectories.shape == (2, config.num_modes, config.future_steps, 2) and logits.shape == (2, config.num_modes)
    newest = boxes[:, :2] + coarse[:, 1]
    assert torch.allclose(proposals[:, 1, 0, :2], newest)  # the newest past frame starts at the coarse position
    assert torch.allclose(proposals[:, 0, 0, :2], backward_prior(newest, boxes[:, :2]))  # the older by extrapolation
    assert torch.allclose(proposals[:, :, 1], proposals[:, :, 0], atol=1e-6)  # the identity refinement moves nothing
    assert torch.equal(proposals[..., 2:], boxes[:, None, None, 2:].expand(-1, 2, TRACK_PASSES, -1))


def test_the_dense_head_codes_past_positions_backwards_from_now():
    head = PredictionHead(channels=4, hidden=4, num_modes=2, future_steps=3, past_steps=2)
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.zero_()
        head.out.bias[2 * (3 * 2 + 1):] = torch.tensor([-1.0, 0.0, -2.0, 0.5])  # now -> now-1, now-1 -> now-2
    trajectories, logits, past = head(torch.randn(1, 4, 5, 5))
    assert trajectories.shape == (1, 2, 3, 2, 5, 5) and logits.shape == (1, 2, 5, 5)
    assert past.shape == (1, 2, 2, 5, 5)
    assert torch.allclose(past[0, :, :, 2, 2], torch.tensor([[-3.0, 0.5], [-1.0, 0.0]]))  # oldest first
    assert PredictionHead(channels=4, hidden=4, num_modes=2, future_steps=3)(torch.randn(1, 4, 5, 5))[2] is None


def test_history_frame_points_go_through_their_history_transform():
    config = _config()
    batch = make_batch(config, num_scenes=1, agents=2, ground_points=30, seed=5)
    step = 0
    points = scene_points(batch, step)[0]
    n = batch.voxel_coords[:, 0].long()
    expected = []
    for agent in range(2):
        rows = n == agent * config.history + step
        p = torch.cat([batch.voxels[r, :k] for r, k in zip(rows.nonzero().squeeze(1).tolist(),
                                                            batch.voxel_num_points[rows].tolist())])
        m = batch.agent_to_ego[0, agent] @ batch.history_to_now[0, agent, step]
        expected.append(torch.cat((p[:, :2] @ m[:2, :2].T + m[:2, 2], p[:, 2:]), dim=1))
    assert len(points) and torch.allclose(points, torch.cat(expected), atol=1e-4)
    # The factory's objects are solid in every frame: the old frame's points sit on the objects' old positions.
    mask = batch.gt_mask[0]
    old = batch.gt_past[0][mask][:, step]
    near = (torch.cdist(old, points[:, :2]) < 0.5).any(dim=1)
    assert near.float().mean() > 0.8


def test_the_decoder_learns_futures_from_tracks():
    torch.manual_seed(0)
    decoder = TrackDecoder(num_classes=1, hidden=64, past_steps=2, num_modes=2, future_steps=3)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=3e-3)

    def draw(n: int):  # constant-velocity tracks along each box's heading, speed 0-10 m/s, 0.5 s steps
        speed = torch.rand(n) * 10
        past = torch.stack((-speed[:, None] * torch.tensor([1.0, 0.5]), torch.zeros(n, 2)), dim=-1)  # [n, 2, 2]
        future = torch.stack((speed[:, None] * torch.tensor([0.5, 1.0, 1.5]), torch.zeros(n, 3)), dim=-1)
        boxes = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]]).expand(n, -1)
        return past, future, boxes

    for _ in range(300):
        past, future, boxes = draw(64)
        modes, _ = decoder(past, torch.full((64, 2), 20), boxes, torch.zeros(64))
        loss = (modes - future[:, None]).norm(dim=-1).mean(-1).min(dim=1).values.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    past, future, boxes = draw(128)
    with torch.no_grad():
        modes, _ = decoder(past, torch.full((128, 2), 20), boxes, torch.zeros(128))
    final_error = (modes[:, :, -1] - future[:, None, -1]).norm(dim=-1).min(dim=1).values
    assert float(final_error.median()) < 0.6  # a 15 m spread of final positions, placed to well under a metre


def test_a_model_with_a_track_decoder_trains_it_and_decodes_with_it():
    with pytest.raises(ValueError, match="track_decoder"):
        dataclasses.replace(model_config("tiny"), track_decoder=True)  # no point refinement
    config = _config()
    torch.manual_seed(0)
    model = V2XModel(config)
    batch = make_batch(config, num_scenes=2, agents=2, ground_points=100, seed=3)
    out = with_tracks(model, with_refinement(model, model(batch), batch), batch)
    m = batch.gt_classes.shape[1]
    assert out.past_offsets.shape[1:3] == (config.history - 1, 2)
    assert out.track.proposals.shape == (2, m, config.history - 1, TRACK_PASSES, 7)
    assert out.track.trajectories.shape == (2, m, config.num_modes, config.future_steps, 2)
    assert not out.track.proposals.requires_grad and not out.track.origin.requires_grad
    losses = task_losses(out, batch, model.geometry)
    assert min(float(losses.past.detach()), float(losses.track_refine.detach()),
               float(losses.track_trajectory.detach())) > 0
    (losses.track_refine + losses.track_trajectory).backward(retain_graph=True)  # these reach no encoder weight
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.refine_head.parameters())  # the detection's refinement is its own
    assert all(p.grad is not None for p in [*model.track_head.parameters(), *model.track_refine_head.parameters()])
    model.zero_grad()
    losses.total.backward()
    assert model.pred_head.out.weight.grad.abs().sum() > 0  # the past positions train the dense head
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())

    with torch.no_grad():  # a decoder that always says "2 m ahead, every step": trajectories follow each box
        last = model.track_head.mlp[-1]
        last.weight.zero_()
        last.bias.zero_()
        k, t = config.num_modes, config.future_steps
        last.bias[: k * t * 2].view(k, t, 2)[:, 0, 0] = 2.0
    model.eval()
    det = predict_scenes(model, batch)[0]
    assert len(det.boxes) > 0
    heading = torch.stack((torch.cos(det.boxes[:, 6]), torch.sin(det.boxes[:, 6])), dim=1)
    expected = det.boxes[:, None, None, :2] + 2.0 * heading[:, None, None, :]
    assert torch.allclose(det.trajectories, expected.expand_as(det.trajectories), atol=1e-4)
    assert torch.allclose(det.mode_scores, torch.full_like(det.mode_scores, 1 / k))
    offsets = read_past_offsets(out.past_offsets.detach(), batch.gt_boxes[..., :2], model.geometry)
    assert offsets.shape == (2, m, config.history - 1, 2)
