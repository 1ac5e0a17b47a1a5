"""The heads' up-sampling neck: finer detection / prediction maps over coarser fusion cells."""

import dataclasses

import pytest
import torch

from models.config import ModelConfig, model_config
from models.v2x_model import V2XModel
from tests.batch_factory import make_batch
from trainer.losses import task_losses


def _tiny(**changes) -> ModelConfig:
    return dataclasses.replace(model_config("tiny"), history=2, **changes)


@pytest.mark.parametrize("changes, message", [
    ({"head_upsample": 3}, "head_upsample must be 1 or 2"),
    ({"head_upsample": 0}, "head_upsample must be 1 or 2"),
    ({"head_upsample": 2, "sparse_strides": [1, 1]}, "divide the BEV stride 1"),
])
def test_bad_head_upsample_is_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**changes)


def test_upsampled_heads_have_finer_maps_than_fusion():
    config = _tiny(head_upsample=2)
    model = V2XModel(config)
    assert config.bev_shape == (40, 40) and config.head_stride == 1
    assert (model.fusion_geometry.cell_x, model.geometry.cell_x) == (1.6, 0.8)
    assert (model.geometry.height, model.geometry.width) == (80, 80)
    batch = make_batch(config, num_scenes=2, agents=2)
    out = model(batch, heads=("det", "pred", "recon"))
    assert out.z.shape[-2:] == (40, 40)
    assert out.heatmap.shape == (2, config.num_classes, 80, 80)
    assert out.box_codes.shape[-2:] == (80, 80)
    assert out.trajectories.shape[-2:] == (80, 80) and out.mode_logits.shape[-2:] == (80, 80)
    assert out.recon_points.shape[-2:] == (40, 40)  # the pretext decoder stays on the fusion cells


def test_upsampled_heads_train_through_the_neck():
    torch.manual_seed(0)
    config = _tiny(head_upsample=2)
    model = V2XModel(config)
    batch = make_batch(config, num_scenes=2, agents=2, seed=1)
    losses = task_losses(model(batch), batch, model.geometry)
    losses.total.backward()
    assert torch.isfinite(losses.total)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.neck.parameters())
    assert all(p.grad is not None for p in model.encoder.compress.parameters())


def test_no_upsampling_is_the_identity_neck():
    model = V2XModel(_tiny())
    assert isinstance(model.neck.up, torch.nn.Identity)
    assert model.geometry == model.fusion_geometry
