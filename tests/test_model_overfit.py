"""Overfitting one fixed batch must give near-perfect detection in eval mode.

This is the end-to-end check of the detection path that a loss curve cannot give: target assignment,
box coding, the box loss, decoding, and the batch-norm running statistics that eval mode uses. A break
in any of them (a flipped offset, a wrong cell, statistics that lag the weights) drops AP@0.5 far below
the bar, while the losses may still fall.
"""

import dataclasses
import time

import pytest
import torch

from models.config import model_config
from models.v2x_model import V2XModel
from tests.batch_factory import make_batch
from trainer.eval.config import EvalConfig
from trainer.eval.evaluator import Evaluator
from trainer.eval.model_eval import predict_scenes
from trainer.losses import TaskLossConfig, task_losses

STEPS = 400
CLASSES = ["vehicle", "pedestrian", "truck"]


@pytest.fixture(scope="module")
def overfit():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tiny = model_config("tiny")
    # the tiny model on a 32 m square at 0.8 m cells: as many cells as the tiny preset, pedestrian-sized cells
    grid = dataclasses.replace(tiny.grid, x_range=[-16.0, 16.0], y_range=[-16.0, 16.0])
    config = dataclasses.replace(tiny, grid=grid, sparse_strides=[1, 1], history=2)
    batch = make_batch(config, num_scenes=2, agents=2, num_objects=6, ground_points=300, seed=3,
                       min_gap=6.0)  # two cars overlapping, or sharing a heatmap peak, cannot both be found
    model = V2XModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, STEPS)
    loss_cfg = TaskLossConfig()
    start = time.perf_counter()
    for _ in range(STEPS):
        losses = task_losses(model(batch, heads=("det",)), batch, model.geometry, loss_cfg)
        optimizer.zero_grad()
        losses.detection.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    evaluator = Evaluator(EvalConfig(class_names=CLASSES))
    evaluator.update(predict_scenes(model, batch), batch)
    return evaluator.compute(), time.perf_counter() - start


def test_overfit_batch_detects_in_eval_mode(overfit):
    metrics, seconds = overfit
    print(f"overfit: {seconds:.1f} s, " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("AP@0.5")))
    assert metrics["AP@0.5"] >= 0.9, metrics
    assert metrics["AP@0.7"] >= 0.5, metrics
