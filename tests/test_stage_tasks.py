"""The stage-task registry: one object per ``stage.task`` owns heads, loss, balancing and statistics; the loop
drives it in-process (litgpt-style entry-point tests with a tiny config)."""

from __future__ import annotations

import json

import pytest
import torch

from launch.train import main
from models.balancer import ConflictFork
from models.config import model_config
from models.balancer.task_fork import TaskFork
from models.v2x_model import V2XModel
from tests.train_harness import base_overrides
from trainer.balancer.strategies import ForkBalancing, ParamPCGradBalancing, UncertaintyBalancing
from trainer.config import StageConfig, TrainConfig
from trainer.config_io import load_config
from trainer.engine.metrics_log import read_metrics
from trainer.tasks import TASKS, make_task
from trainer.engine.train_module import TrainingModule


@pytest.mark.parametrize("task, heads, metric", [
    ("pretrain", ("recon",), "recon"), ("multitask", ("det", "pred"), "EPA"), ("detection", ("det",), "AP@0.5"),
    ("prediction", ("pred",), "minADE")])
def test_each_task_states_its_heads_and_its_validation_metrics(task, heads, metric):
    stage = StageConfig(task=task)
    cfg = TrainConfig(stages={"s": stage})
    made = make_task(stage, cfg)
    assert made.heads == heads and made.evaluates and made.stage is stage
    assert metric in TASKS[task].metrics(cfg.eval)
    assert ("recon" in TASKS[task].metrics(cfg.eval)) is (task == "pretrain")


@pytest.mark.parametrize("method, strategy, fork", [
    ("fork", ForkBalancing, ConflictFork), ("uncertainty", UncertaintyBalancing, TaskFork),
    ("param_pcgrad", ParamPCGradBalancing, TaskFork)])
def test_multitask_takes_its_balancing_from_the_config(method, strategy, fork):
    cfg = load_config("recipes/multitask.yaml", [f"balancing.method={method}"] +
                      (["distributed.engine=plain"] if method == "param_pcgrad" else []))
    module = TrainingModule.for_stage(V2XModel(model_config("tiny")), cfg.stages["finetune"], cfg)
    assert type(module.task.balancing) is strategy and type(module.model.task_fork) is fork
    names = {name for name, _ in module.named_parameters()}
    assert ("task.balancing.uncertainty.log_vars" in names) is (method == "uncertainty")


def test_unknown_task_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"stage.task must be one of \('pretrain', 'multitask'"):
        StageConfig(task="pretrian")
    assert set(TASKS) == {"pretrain", "multitask", "detection", "prediction"}


@pytest.mark.parametrize("method, logged", [("fork", "balance/cosine"), ("uncertainty", "balance/weight_det"),
                                            ("param_pcgrad", "balance/cosine")])
def test_the_loop_trains_each_balancing_in_process(tiny_data, tmp_path, method, logged):
    train, val = tiny_data
    run_dir = tmp_path / "run"
    rc = main(["--config", "recipes/multitask.yaml", *base_overrides(train, val, run_dir, steps=3),
               f"balancing.method={method}", "distributed.engine=plain", "stages.finetune.evaluate=false"])
    assert rc == 0
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("stage") == "finetune" and "loss/total" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(logged in r and torch.isfinite(torch.tensor(r[logged])) for r in rows)
    if method == "uncertainty":  # the weights are trained: they move from their initial 0.5
        assert rows[0][logged] == pytest.approx(0.5) and rows[-1][logged] != pytest.approx(0.5)
    record = json.loads((run_dir / "finetune" / "final.json").read_text())
    assert record["steps"] == 3 and record["task"] == "multitask"
