"""Short CPU training on one batch: both task losses fall, and a collaborator's view reaches the ego."""

import dataclasses

import pytest
import torch

from models.box_coding import box_centre_cells
from models.config import model_config
from models.v2x_model import V2XModel
from tests.batch_factory import make_batch
from tests.test_model_fusion import drop_agent
from trainer.losses import TaskLossConfig, task_losses

STEPS = 50
HIDDEN = 3


@pytest.fixture(scope="module")
def trained():
    """Tiny model (3 history frames) overfit on 2 scenes whose first objects only the collaborator sees."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = dataclasses.replace(model_config("tiny"), history=3)
    batch = make_batch(config, num_scenes=2, agents=2, infrastructure=False, hidden_from_ego=HIDDEN,
                       num_objects=5, ground_points=150, seed=11)
    model = V2XModel(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for _ in range(STEPS):
        losses = task_losses(model(batch), batch, model.geometry)
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()
        history.append(losses.as_floats())
    return model, batch, history


def test_detection_and_prediction_losses_fall_five_fold(trained):
    _, _, history = trained
    for task in ("detection", "prediction"):
        assert history[-1][task] * 5 <= history[0][task], (task, history[0][task], history[-1][task])
    assert all(v == v for v in history[-1].values())  # no NaN


def test_collaborator_raises_ego_heatmap_at_objects_the_ego_cannot_see(trained):
    """Removing the collaborator lowers the ego's heatmap at the objects only it sees, not at the others."""
    model, batch, _ = trained
    geometry = model.geometry
    with torch.no_grad():  # train mode: batch statistics, as during the overfit (running stats are young)
        with_collab = torch.sigmoid(model(batch, heads=("det",)).heatmap)
        alone = torch.sigmoid(model(drop_agent(batch, 1), heads=("det",)).heatmap)
    cells = box_centre_cells(batch.gt_boxes, geometry)
    on_map = batch.gt_mask & (cells >= 0).all(-1) & (cells[..., 0] < geometry.width) & (cells[..., 1] < geometry.height)
    scene = torch.arange(batch.num_scenes)[:, None].expand_as(on_map)
    index = (scene, batch.gt_classes.clamp_min(0), cells[..., 1].clamp(0, geometry.height - 1),
             cells[..., 0].clamp(0, geometry.width - 1))
    drop = with_collab[index] - alone[index]  # [B, M]
    hidden = torch.zeros_like(on_map)
    hidden[:, :HIDDEN] = True
    drop_hidden, drop_visible = drop[on_map & hidden], drop[on_map & ~hidden]
    assert len(drop_hidden) >= 3 and len(drop_visible) >= 2
    assert drop_hidden.mean() > 0.04, drop_hidden
    assert drop_hidden.mean() > drop_visible.mean() + 0.04, (drop_hidden, drop_visible)


def test_task_losses_reject_missing_heads(trained):
    model, batch, _ = trained
    with torch.no_grad():
        recon_only = model(batch, heads=("recon",))
        det_only = model(batch, heads=("det",))
    zero = task_losses(recon_only, batch, model.geometry)
    assert zero.total == 0
    assert task_losses(det_only, batch, model.geometry).prediction == 0
    with pytest.raises(ValueError, match="min_overlap"):
        TaskLossConfig(min_overlap=1.5)


def test_losses_with_no_objects_are_zero_and_differentiable(trained):
    model, batch, _ = trained
    empty = dataclasses.replace(batch, gt_mask=torch.zeros_like(batch.gt_mask),
                                gt_classes=torch.full_like(batch.gt_classes, -1))
    losses = task_losses(model(empty), empty, model.geometry)
    assert losses.box == 0 and losses.trajectory == 0 and losses.mode == 0
    assert losses.heatmap > 0  # every cell is a negative
    losses.total.backward()
