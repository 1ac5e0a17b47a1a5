"""Model structure: shapes, padded agents, agent permutation, head selection, encoder switches, decoding."""

import dataclasses

import pytest
import torch

from models.batch import Batch
from models.config import model_config
from models.decode import circle_nms, decode_detections
from models.balancer.task_fork import TaskFork
from models.v2x_model import V2XModel
from tests.batch_factory import make_batch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def config():
    return model_config("tiny")


@pytest.fixture(scope="module")
def model(config):
    torch.manual_seed(0)
    return V2XModel(config).eval()


def permute_agents(batch: Batch, perm: list[int]) -> Batch:
    """The same scenes with agent slots reordered: new slot i holds old slot perm[i]."""
    a, t = batch.max_agents, batch.history
    inverse = torch.empty(a, dtype=torch.long)
    inverse[torch.tensor(perm)] = torch.arange(a)
    n = batch.voxel_coords[:, 0].long()
    scene, old_agent, frame = n // (a * t), (n // t) % a, n % t
    coords = batch.voxel_coords.clone()
    coords[:, 0] = ((scene * a + inverse[old_agent]) * t + frame).int()
    p = torch.tensor(perm)
    return dataclasses.replace(batch, voxel_coords=coords, agent_mask=batch.agent_mask[:, p],
                               agent_types=batch.agent_types[:, p], frame_mask=batch.frame_mask[:, p],
                               history_to_now=batch.history_to_now[:, p], agent_to_ego=batch.agent_to_ego[:, p])


def drop_agent(batch: Batch, agent: int) -> Batch:
    """The same scenes with one agent slot turned into padding (its voxels removed)."""
    a, t = batch.max_agents, batch.history
    keep = (batch.voxel_coords[:, 0].long() // t) % a != agent
    mask = batch.agent_mask.clone()
    mask[:, agent] = False
    frames = batch.frame_mask.clone()
    frames[:, agent] = False
    return dataclasses.replace(batch, voxels=batch.voxels[keep], voxel_num_points=batch.voxel_num_points[keep],
                               voxel_coords=batch.voxel_coords[keep], agent_mask=mask, frame_mask=frames)


@pytest.mark.parametrize("agents", [1, 2, 3, 4])
def test_output_shapes_for_every_agent_count(model, config, agents):
    batch = make_batch(config, num_scenes=2, agents=agents, ground_points=150, seed=agents)
    with torch.no_grad():
        out = model(batch, heads=("det", "pred", "recon"))
    h, w = config.bev_shape
    assert out.z.shape == (2, config.bev_channels, h, w)
    assert out.heatmap.shape == (2, config.num_classes, h, w)
    assert out.box_codes.shape == (2, 8, h, w)
    assert out.trajectories.shape == (2, config.num_modes, config.future_steps, 2, h, w)
    assert out.mode_logits.shape == (2, config.num_modes, h, w)
    assert out.recon_points.shape == (2, config.recon_points, 3, h, w)
    assert out.iou_logits is None  # no IoU branch by default
    assert all(torch.isfinite(v).all() for v in vars(out).values() if v is not None)


def test_padded_agent_slots_change_nothing(model, config):
    small = make_batch(config, num_scenes=2, agents=[2, 3], max_agents=3, ground_points=150, seed=3)
    padded = make_batch(config, num_scenes=2, agents=[2, 3], max_agents=4, ground_points=150, seed=3)
    # Garbage in the padded slots' transforms and types must not leak in either.
    padded.history_to_now[:, 3] = torch.randn_like(padded.history_to_now[:, 3])
    padded.agent_to_ego[:, 3] = torch.randn_like(padded.agent_to_ego[:, 3])
    padded.agent_types[:, 3] = 1
    with torch.no_grad():
        a, b = model(small), model(padded)
    assert torch.allclose(a.z, b.z, atol=1e-5)
    assert torch.allclose(a.heatmap, b.heatmap, atol=1e-5)
    assert torch.allclose(a.trajectories, b.trajectories, atol=1e-4)


def test_permuting_non_ego_agents_keeps_outputs(model, config):
    batch = make_batch(config, num_scenes=2, agents=[4, 3], ground_points=150, seed=4)
    with torch.no_grad():
        ref = model(batch)
        perm = model(permute_agents(batch, [0, 3, 1, 2]))
        swapped_ego = model(permute_agents(batch, [1, 0, 2, 3]))
    assert torch.allclose(ref.z, perm.z, atol=1e-5)
    assert torch.allclose(ref.heatmap, perm.heatmap, atol=1e-5)
    assert not torch.allclose(ref.z, swapped_ego.z, atol=1e-3)  # the ego slot is special


def test_collaborator_changes_the_ego_view_at_its_objects_only_when_present(model, config):
    batch = make_batch(config, num_scenes=1, agents=2, infrastructure=False, ground_points=150, seed=5)
    with torch.no_grad():
        with_collab = model(batch).z
        alone = model(drop_agent(batch, 1)).z
    assert (with_collab - alone).abs().amax() > 1e-3


def test_heads_selection_and_fork_hook(model, config):
    batch = make_batch(config, num_scenes=1, agents=2, ground_points=150, seed=6)

    class CountingFork(TaskFork):
        calls = 0

        def forward(self, z):
            CountingFork.calls += 1
            return super().forward(z)

    model.task_fork = CountingFork()
    try:
        with torch.no_grad():
            recon = model(batch, heads=("recon",))
            det = model(batch, heads=("det", "pred"))
    finally:
        model.task_fork = TaskFork()
    assert recon.heatmap is None and recon.trajectories is None and recon.recon_points is not None
    assert det.recon_points is None and det.heatmap is not None
    assert CountingFork.calls == 1
    with pytest.raises(ValueError, match="heads"):
        model(batch, heads=("seg",))


def test_voxel_mask_replaces_features_with_the_mask_token(model, config):
    batch = make_batch(config, num_scenes=1, agents=1, ground_points=150, seed=7)
    mask = torch.rand(batch.voxels.shape[0]) < 0.7
    with torch.no_grad():
        plain = model(batch, heads=("recon",)).recon_points
        model.encoder.mask_token.fill_(5.0)
        masked = model(batch, heads=("recon",), voxel_mask=mask).recon_points
        model.encoder.mask_token.zero_()
    assert not torch.allclose(plain, masked)
    with pytest.raises(ValueError, match="voxel_mask"):
        model(batch, voxel_mask=mask[:-1])


@pytest.mark.parametrize("encoder", ["spconv", "pillars"])
def test_history_without_gradient_same_outputs_current_frame_gradient_only(config, encoder):
    cfg = dataclasses.replace(config, encoder=encoder)
    torch.manual_seed(3)
    model = V2XModel(cfg).eval()  # running statistics: the split and the joint encoding see the same BN
    batch = make_batch(cfg, num_scenes=2, agents=[3, 2], ground_points=150, seed=11)
    mask = torch.rand(batch.voxels.shape[0]) < 0.3
    current = (batch.voxel_coords[:, 0] % batch.history == batch.history - 1)
    assert current.any() and (~current).any()
    grads = {}
    for history_grad in (True, False):
        voxels = batch.voxels.clone().requires_grad_(True)
        out = model(dataclasses.replace(batch, voxels=voxels), voxel_mask=mask, history_grad=history_grad)
        (out.heatmap.sum() + out.trajectories.square().sum()).backward()
        grads[history_grad] = (out.heatmap.detach(), voxels.grad)
    torch.testing.assert_close(grads[False][0], grads[True][0], rtol=1e-5, atol=1e-5)
    frozen, full = grads[False][1], grads[True][1]
    assert frozen[~current].abs().sum() == 0 and full[~current].abs().sum() > 0  # history: no gradient
    torch.testing.assert_close(frozen[current], full[current], rtol=1e-4, atol=1e-6)
    model.zero_grad()
    out = model(batch, history_grad=False)
    out.heatmap.sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad and p is not
               getattr(model.encoder, "mask_token", None))  # the current frame still trains the whole encoder


def test_pillar_encoder_switch(config):
    cfg = dataclasses.replace(config, encoder="pillars")
    batch = make_batch(cfg, num_scenes=1, agents=2, ground_points=150, seed=8)
    out = V2XModel(cfg)(batch)
    out.heatmap.sum().backward()
    assert out.heatmap.shape[-2:] == cfg.bev_shape and torch.isfinite(out.z).all()


def test_rejects_history_mismatch(model, config):
    batch = make_batch(dataclasses.replace(config, history=3), num_scenes=1, agents=1, ground_points=50)
    with pytest.raises(ValueError, match="history"):
        model(batch)


def test_circle_nms_and_decode(model, config):
    keep = circle_nms(torch.tensor([[0.0, 0.0], [0.5, 0.0], [5.0, 0.0]]), torch.tensor([0.9, 0.95, 0.3]),
                      torch.full((3,), 1.0))
    assert keep.tolist() == [1, 2]
    batch = make_batch(config, num_scenes=2, agents=2, ground_points=150, seed=9)
    with torch.no_grad():
        out = model(batch)
    scenes = decode_detections(out, model.geometry, score_threshold=0.0, max_detections=20)
    assert len(scenes) == 2
    for det in scenes:
        n = det.boxes.shape[0]
        assert 0 < n <= 20 and det.scores.shape == (n,) and det.labels.dtype == torch.long
        assert (det.scores[:-1] >= det.scores[1:]).all()
        assert det.trajectories.shape == (n, config.num_modes, config.future_steps, 2)
        assert torch.allclose(det.mode_scores.sum(-1), torch.ones(n), atol=1e-5)
    with pytest.raises(ValueError, match="det"):
        decode_detections(model(batch, heads=("recon",)), model.geometry)
