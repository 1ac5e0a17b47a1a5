"""Cooperative inference: message bytes (hand-computed), precision and sparsification, the fusion baselines from one
checkpoint (late fusion of a single agent is no fusion), and the clean defaults computing exactly what the model
computed before."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from models.communication import (cell_confidence, detection_message_bytes, detection_values, feature_message_bytes,
                                  select_cells, transmit, value_bytes)
from models.config import model_config
from models.detections import SceneDetections
from trainer.eval.late_fusion import detections_inside, detections_to_frame, merge_detections
from models.v2x_model import V2XModel
from models.warp import warp_bev
from tests.batch_factory import make_batch
from trainer.data.geometry import relative_se2
from trainer.data.pose_noise import perturb_poses
from trainer.engine.batch_ops import agent_view
from trainer.eval.communication import CommunicationLog, MessageRecord, summarize_messages
from trainer.eval.config import EvalConfig
from trainer.eval.cooperative import predict_cooperative
from trainer.eval.cooperative_config import CommConfig
from trainer.eval.model_eval import predict_scenes

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def config():
    return dataclasses.replace(model_config("tiny"), refine_points=8, head_upsample=2)


@pytest.fixture(scope="module")
def model(config):
    torch.manual_seed(0)
    return V2XModel(config).eval()


@pytest.fixture(scope="module")
def batch(config):
    return make_batch(config, num_scenes=2, agents=[2, 4], num_objects=4, ground_points=150, seed=4)


# A scene run alone (``agent_view``) goes through other tensor shapes than inside its batch, so its floats may
# differ in the last bits with the kernels' blocking (the thread count, the CPU): those comparisons allow that.
TOL = {"rtol": 1e-5, "atol": 1e-5}


def same_detections(a: list[SceneDetections], b: list[SceneDetections], *, close: bool = False) -> bool:
    """Equal field by field: exactly, or (``close``) to float precision."""
    def same(x: torch.Tensor, y: torch.Tensor) -> bool:
        return x.shape == y.shape and torch.allclose(x, y, **TOL) if close else torch.equal(x, y)
    return len(a) == len(b) and all(same(getattr(x, f.name), getattr(y, f.name))
                                    for x, y in zip(a, b) for f in dataclasses.fields(x))


def one_of(rows: torch.Tensor, box: torch.Tensor) -> bool:
    """Whether ``box`` [7] is (to float precision) one of ``rows`` [N, 7]."""
    return bool(torch.isclose(rows, box, **TOL).all(dim=1).any())


def test_message_bytes_of_a_hand_computed_case():
    mask = torch.tensor([[True, True, True, False]])
    assert feature_message_bytes(None, mask, channels=16, height=40, width=40, bytes_per_value=4).tolist() == \
        [[0, 40 * 40 * 16 * 4, 40 * 40 * 16 * 4, 0]]
    sent = torch.zeros(1, 4, 40, 40, dtype=torch.bool)
    sent[0, 1, :3, 0] = True  # 3 cells of agent 1, none of agent 2; the ego and the padded slot send nothing
    sent[0, 0] = sent[0, 3] = True
    assert feature_message_bytes(sent, mask, channels=16, height=40, width=40, bytes_per_value=2).tolist() == \
        [[0, 3 * 16 * 2 + 200, 200, 0]]  # values + a 1600-bit map of the cells
    assert detection_values(3, 6) == 7 + 1 + 1 + 3 * 6 * 2 + 3 == 48
    assert detection_message_bytes(torch.tensor([[5, 2, 0, 7]]), mask, values_per_detection=48,
                                   bytes_per_value=4).tolist() == [[0, 2 * 48 * 4, 0, 0]]
    assert (value_bytes("fp32"), value_bytes("fp16"), value_bytes("bf16")) == (4, 2, 2)


def test_cells_are_chosen_by_confidence():
    confidence = torch.tensor([[[0.1, 0.9], [0.4, 0.6]]])
    assert select_cells(confidence, mode="none", keep_ratio=1.0, threshold=0.5) is None
    assert select_cells(confidence, mode="topk", keep_ratio=0.25, threshold=0.0).tolist() == [[[False, True],
                                                                                                [False, False]]]
    assert select_cells(confidence, mode="topk", keep_ratio=0.3, threshold=0.0).sum() == 2  # ceil(0.3 * 4)
    assert select_cells(confidence, mode="threshold", keep_ratio=1.0, threshold=0.6).tolist() == [[[False, True],
                                                                                                    [False, True]]]
    logits = torch.full((1, 2, 4, 4), -10.0)
    logits[0, 1, 3, 2] = 10.0  # head cell (row 3, col 2) lies in fusion cell (1, 1) at factor 2
    pooled = cell_confidence(logits, 2)
    assert pooled.shape == (1, 2, 2) and pooled[0, 1, 1] > 0.99 and pooled.flatten()[:3].max() < 1e-4


def test_messages_travel_at_their_precision_and_only_the_sent_cells_arrive():
    features = torch.randn(2, 3, 4, 5, 5)
    assert transmit(features, None, torch.float32) is features
    half = transmit(features, None, torch.float16)
    assert torch.equal(half[:, 0], features[:, 0]) and half.dtype == torch.float32
    assert torch.equal(half[:, 1:], features[:, 1:].half().float()) and not torch.equal(half, features)
    sent = torch.rand(2, 3, 5, 5) > 0.5
    sparse = transmit(features, sent, torch.float32)
    assert torch.equal(sparse[:, 0], features[:, 0])
    assert torch.equal(sparse[:, 1:], features[:, 1:] * sent[:, 1:, None])


def test_clean_intermediate_fusion_is_exactly_the_models_forward(model, batch):
    reference = predict_scenes(model, batch)
    clean = predict_cooperative(model, batch, EvalConfig())
    assert same_detections(clean.detections, reference) and all(len(d.scores) for d in reference)
    c, (h, w) = model.config.bev_channels, model.config.bev_shape
    assert clean.message_bytes.tolist() == [[0, h * w * c * 4, 0, 0], [0] + [h * w * c * 4] * 3]


def test_late_fusion_of_a_single_agent_equals_no_fusion(model, config):
    alone = make_batch(config, num_scenes=2, agents=1, num_objects=4, ground_points=150, seed=5)
    late = predict_cooperative(model, alone, EvalConfig(fusion="late"))
    none = predict_cooperative(model, alone, EvalConfig(fusion="none"))
    assert same_detections(late.detections, none.detections) and not late.message_bytes.any()
    assert all(len(d.scores) for d in none.detections)


def test_late_fusion_merges_the_agents_own_detections_and_counts_them(model, batch):
    late = predict_cooperative(model, batch, EvalConfig(fusion="late"))
    own = {a: predict_cooperative(model, agent_view(batch, a), EvalConfig(fusion="none")).detections
           for a in range(batch.max_agents)}
    values = detection_values(model.config.num_modes, model.config.future_steps)
    for b, det in enumerate(late.detections):
        agents = [a for a in range(batch.max_agents) if batch.agent_mask[b, a]]
        candidates = torch.cat([detections_to_frame(own[a][b], batch.agent_to_ego[b, a]).boxes for a in agents])
        assert all(one_of(candidates, box) for box in det.boxes)  # each comes from some agent
        assert len(det.scores) <= len(candidates) and bool((det.scores[:-1] >= det.scores[1:]).all())
        from_ego = torch.tensor([one_of(own[0][b].boxes, box) for box in det.boxes], dtype=torch.bool)
        assert bool((from_ego | model.geometry.inside(det.boxes[:, :2])).all())  # others' only on the ego's grid
        expected = [len(own[a][b].scores) * values * 4 if a in agents[1:] else 0 for a in range(batch.max_agents)]
        assert late.message_bytes[b].tolist() == expected


def test_no_fusion_ignores_the_collaborators_and_sends_nothing(model, batch):
    none = predict_cooperative(model, batch, EvalConfig(fusion="none"))
    without = predict_cooperative(model, agent_view(batch, 0), EvalConfig(fusion="none"))
    assert same_detections(none.detections, without.detections, close=True) and not none.message_bytes.any()


def test_a_message_without_cells_is_no_message(config, batch):
    torch.manual_seed(1)
    model = V2XModel(dataclasses.replace(config, refine_points=0)).eval()  # the refinement reads all points
    silent = predict_cooperative(model, batch, EvalConfig(comm=CommConfig(sparsify="threshold", threshold=1.0)))
    none = predict_cooperative(model, batch, EvalConfig(fusion="none"))
    assert same_detections(silent.detections, none.detections)
    h, w = model.config.bev_shape
    assert silent.message_bytes.tolist() == [[0, math.ceil(h * w / 8), 0, 0], [0] + [math.ceil(h * w / 8)] * 3]


def test_sparse_and_half_precision_messages_cost_less(model, batch):
    c, (h, w) = model.config.bev_channels, model.config.bev_shape
    top = predict_cooperative(model, batch, EvalConfig(comm=CommConfig(sparsify="topk", keep_ratio=0.1)))
    cells = math.ceil(0.1 * h * w)
    assert top.message_bytes[1, 1:].tolist() == [cells * c * 4 + math.ceil(h * w / 8)] * 3
    half = predict_cooperative(model, batch, EvalConfig(comm=CommConfig(precision="fp16")))
    assert half.message_bytes[1, 1:].tolist() == [h * w * c * 2] * 3
    dense = predict_cooperative(model, batch, EvalConfig())
    assert not same_detections(top.detections, dense.detections)
    for a, b in zip(half.detections, dense.detections):  # fp16 rounding moves the output only slightly
        assert len(a.scores) == len(b.scores)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-2, rtol=0)


def test_a_pose_error_moves_the_collaborators_features_in_the_ego_frame(model):
    geometry, c = model.fusion_geometry, model.config.bev_channels
    poses = np.array([[[3.0, -2.0, 1.8, 0.0, 0.0, 0.0]], [[10.0, 5.0, 1.9, 0.0, 30.0, 0.0]]])  # ego heading +x
    noisy = perturb_poses(poses, np.array([[0, 0, 0, 0], [2 * geometry.cell_x, 0, 0, 0]]))  # 2 cells along x
    features = torch.randn(1, c, geometry.height, geometry.width)
    clean, _ = warp_bev(features, torch.tensor(relative_se2(poses[1, 0], poses[0, 0]))[None].float(), geometry)
    moved, _ = warp_bev(features, torch.tensor(relative_se2(noisy[1, 0], noisy[0, 0]))[None].float(), geometry)
    torch.testing.assert_close(moved[..., 2:], clean[..., :-2], atol=1e-4, rtol=0)  # W is x: 2 columns on
    assert moved.abs().sum() > 0 and not torch.allclose(moved, clean)


def test_agent_view_is_one_agent_as_its_own_ego(batch):
    view = agent_view(batch, 2)
    a, t = batch.max_agents, batch.history
    n = batch.voxel_coords[:, 0].long()
    mine = (n // t) % a == 2
    assert torch.equal(view.voxels, batch.voxels[mine])
    assert torch.equal(view.voxel_coords[:, 0].long(), n[mine] // (a * t) * t + n[mine] % t)
    assert view.agent_mask.tolist() == [[False], [True]]
    assert torch.equal(view.agent_to_ego[:, 0], torch.eye(3).expand(2, 3, 3))
    assert torch.equal(view.history_to_now[:, 0], batch.history_to_now[:, 2])


def _det(boxes, scores, labels):
    n = len(scores)
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return SceneDetections(boxes=boxes, scores=torch.tensor(scores), labels=torch.tensor(labels),
                           trajectories=boxes[:, None, None, :2].repeat(1, 2, 3, 1), mode_scores=torch.full((n, 2), 0.5))


def test_detections_move_rigidly_into_the_ego_frame():
    det = _det([[1.0, 0.0, 0.2, 4.0, 2.0, 1.5, 0.0]], [0.9], [0])
    quarter = torch.tensor([[0.0, -1.0, 10.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # turn 90 deg, then x + 10
    moved = detections_to_frame(det, quarter)
    torch.testing.assert_close(moved.boxes, torch.tensor([[10.0, 1.0, 0.2, 4.0, 2.0, 1.5, math.pi / 2]]))
    torch.testing.assert_close(moved.trajectories[0, 0, 0], torch.tensor([10.0, 1.0]))
    same = detections_to_frame(det, torch.eye(3))
    assert all(torch.equal(getattr(same, f.name), getattr(det, f.name)) for f in dataclasses.fields(det))


def test_detections_beyond_the_ego_grid_are_dropped(model):
    half = model.geometry.x_max
    det = _det([[half - 1.0, 0, 0, 4, 2, 1.5, 0], [half + 1.0, 0, 0, 4, 2, 1.5, 0]], [0.9, 0.8], [0, 0])
    kept = detections_inside(det, model.geometry)
    assert kept.scores.tolist() == pytest.approx([0.9]) and kept.trajectories.shape == (1, 2, 3, 2)


def test_merge_drops_a_weaker_duplicate_of_another_agent_only():
    ego = _det([[0.0, 0, 0, 4, 2, 1.5, 0], [1.0, 0, 0, 4, 2, 1.5, 0]], [0.9, 0.5], [0, 0])
    other = _det([[1.5, 0, 0, 4, 2, 1.5, 0], [0.5, 0, 0, 1, 1, 1.7, 0], [10.0, 0, 0, 4, 2, 1.5, 0],
                  [0.0, 2.5, 0, 4, 2, 1.5, 0]], [0.8, 0.7, 0.6, 0.55], [0, 1, 0, 0])
    merged = merge_detections([ego, other])
    # dropped: the other agent's car 1.5 m from the ego's stronger car; kept: the ego's own weaker car 1 m away
    # (one agent's list has been through NMS already), the pedestrian (another class), the far car and the car
    # 2.5 m beside
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.55, 0.5])
    assert merged.labels.tolist() == [0, 1, 0, 0, 0] and merged.trajectories.shape == (5, 2, 3, 2)
    # with 1 m the other agent's car stays, and drops the ego's weaker car 0.5 m from it instead
    assert merge_detections([ego, other], radius=1.0).scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.55])
    with pytest.raises(ValueError, match="at least one"):
        merge_detections([])


def test_communication_log_summarises_every_sample_once():
    records = [MessageRecord(key="b", bytes=(100, 300), agent_types=(0, 1)),
               MessageRecord(key="a", bytes=(200,), agent_types=(0,)), MessageRecord(key="c", bytes=(), agent_types=())]
    metrics = summarize_messages(records)
    assert metrics["comm/messages"] == 3 and metrics["comm/bytes_mean"] == 200 and metrics["comm/bytes_max"] == 300
    assert metrics["comm/bytes_p50"] == 200 and metrics["comm/bytes_per_sample"] == 200  # (400 + 200 + 0) / 3
    assert metrics["comm/bytes_mean/vehicle"] == 150 and metrics["comm/bytes_mean/infrastructure"] == 300
    assert math.isnan(summarize_messages([])["comm/bytes_mean"])
    batch = make_batch(model_config("tiny"), num_scenes=2, agents=[1, 3], num_objects=1, ground_points=20)
    log = CommunicationLog(gather=lambda mine: [mine, mine])  # two ranks that read the same samples
    log.update(batch, torch.tensor([[0, 0, 0, 0], [0, 10, 20, 0]]))
    summary, per_sample = log.compute()
    assert [r.key for r in per_sample] == sorted(batch.keys) and summary["comm/messages"] == 2
    assert {r.key: r.bytes for r in per_sample} == {batch.keys[0]: (), batch.keys[1]: (10, 20)}
    assert per_sample[0].as_json()["agent_types"] in ([], ["vehicle", "infrastructure"])
    with pytest.raises(ValueError, match="must be"):
        log.update(batch, torch.zeros(2, 3, dtype=torch.int64))


def test_bad_cooperation_settings_are_refused():
    for bad in ({"precision": "int4"}, {"sparsify": "random"}, {"keep_ratio": 0.0}, {"threshold": 1.5}):
        with pytest.raises(ValueError, match="comm."):
            CommConfig(**bad)
    with pytest.raises(ValueError, match="eval.fusion"):
        EvalConfig(fusion="early")
