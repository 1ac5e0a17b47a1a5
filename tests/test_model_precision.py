"""Mixed precision: the spconv encoder is an fp32 island under bf16 autocast and with bf16 weights."""

import dataclasses

import pytest
import torch

from models.config import model_config
from models.v2x_model import V2XModel
from tests.batch_factory import make_batch
from trainer.losses import task_losses

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup():
    config = dataclasses.replace(model_config("tiny"), history=2)
    return config, make_batch(config, num_scenes=1, agents=2, ground_points=150, seed=21)


@pytest.mark.parametrize("encoder", ["spconv", "pillars"])
def test_bf16_autocast_keeps_outputs_finite(setup, encoder):
    config, batch = setup
    model = V2XModel(dataclasses.replace(config, encoder=encoder))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bev = model.encoder(batch.voxels, batch.voxel_num_points, batch.voxel_coords, 4)
        out = model(batch)
        losses = task_losses(out, batch, model.geometry)
    assert bev.dtype == torch.bfloat16
    assert torch.isfinite(out.heatmap.float()).all() and torch.isfinite(losses.total)
    losses.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("encoder", ["spconv", "pillars"])
def test_bf16_weights_run_with_fp32_island(setup, encoder):
    config, batch = setup
    model = V2XModel(dataclasses.replace(config, encoder=encoder)).to(torch.bfloat16)
    out = model(batch, heads=("det", "pred", "recon"))
    assert out.z.dtype == torch.bfloat16
    assert all(torch.isfinite(v.float()).all() for v in vars(out).values() if v is not None)  # iou_logits: off
    losses = task_losses(out, batch, model.geometry)
    losses.total.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all() for g in grads)
    assert model.encoder.compress[0].weight.dtype == torch.bfloat16  # parameters stay in the model's dtype


def test_bf16_encoder_matches_fp32_encoder(setup):
    config, batch = setup
    torch.manual_seed(0)
    model = V2XModel(config).eval()
    reference = model.encoder(batch.voxels, batch.voxel_num_points, batch.voxel_coords, 4)
    model.to(torch.bfloat16)
    low = model.encoder(batch.voxels, batch.voxel_num_points, batch.voxel_coords, 4)
    assert torch.allclose(low.float(), reference, atol=0.1, rtol=0.05)


def test_fp32_island_equals_spconv_sequential_forward_and_backward(setup):
    import spconv.pytorch as spconv

    from models.sparse_encoder import voxel_mean_features

    config, batch = setup
    encoder = V2XModel(config).encoder.train()
    encoder._select_algo(torch.device("cpu"))
    feats = voxel_mean_features(batch.voxels, batch.voxel_num_points, batch.voxel_coords, config.grid)
    results = []
    for run in (encoder._run_sparse_fp32, encoder.net):
        encoder.zero_grad()
        x = spconv.SparseConvTensor(feats, batch.voxel_coords.int(), encoder.spatial_shape, 4)
        dense = run(x).dense()
        dense.square().mean().backward()
        results.append((dense.detach(), [p.grad.clone() for p in encoder.net.parameters()]))
    (a, grads_a), (b, grads_b) = results
    assert torch.equal(a, b) and a.abs().sum() > 0
    assert len(grads_a) == len(grads_b) > 0 and all(torch.equal(x, y) for x, y in zip(grads_a, grads_b))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forward_uses_default_spconv_algorithm(setup):
    from spconv.core import ConvAlgo

    config, batch = setup
    model = V2XModel(config).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(batch.to("cuda"))
    assert torch.isfinite(out.heatmap.float()).all()
    assert all(conv.algo != ConvAlgo.Native for conv in model.encoder._convs)
    out.heatmap.float().sum().backward()
