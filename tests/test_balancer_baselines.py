"""Balancing baselines: uncertainty weighting, parameter-level PCGrad, method config, the all-reduce."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.balancer_zero_worker import make_data, make_model, task_losses
from models.balancer import ConflictFork, pcgrad
from models.balancer.task_fork import TaskFork
from trainer.runtime import sum_over_ranks
from trainer.balancer import (
    BALANCINGS,
    BalancingConfig,
    ParamPCGrad,
    UncertaintyWeighting,
    ensure_param_pcgrad_supported,
)


def test_uncertainty_weighting_value_and_learning_signal():
    uw = UncertaintyWeighting(2, init_log_var=0.0)
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.0, math.log(4.0)]))
    l1, l2 = torch.tensor(2.0, requires_grad=True), torch.tensor(8.0, requires_grad=True)
    total = uw([l1, l2])
    assert float(total.detach()) == pytest.approx(0.5 * 2.0 + 0.0 + 0.5 * 8.0 / 4.0 + 0.5 * math.log(4.0))
    total.backward()
    assert float(l1.grad) == pytest.approx(0.5) and float(l2.grad) == pytest.approx(0.125)
    # d/ds (0.5 e^-s L + 0.5 s) = 0.5 (1 - e^-s L): a large loss pushes its log-variance up
    assert uw.log_vars.grad.tolist() == pytest.approx([0.5 * (1 - 2.0), 0.5 * (1 - 2.0)])
    torch.testing.assert_close(uw.task_weights(), torch.tensor([0.5, 0.125]))


def test_uncertainty_weighting_rejects_bad_input():
    with pytest.raises(ValueError, match="num_tasks"):
        UncertaintyWeighting(0)
    uw = UncertaintyWeighting(2)
    with pytest.raises(ValueError, match="expected 2"):
        uw([torch.tensor(1.0)])
    with pytest.raises(ValueError, match="scalar"):
        uw([torch.ones(3), torch.tensor(1.0)])


def test_param_pcgrad_matches_a_hand_computed_projection():
    x, det_t, pred_t = make_data(1)[0]
    model = make_model(TaskFork())
    det, pred, _ = model(x)
    l_det, l_pred = task_losses(det, pred, det_t, pred_t)
    enc = list(model.encoder.parameters())
    g_det = torch.autograd.grad(l_det, enc + list(model.det_head.parameters()), retain_graph=True)
    g_pred = torch.autograd.grad(l_pred, enc + list(model.pred_head.parameters()), retain_graph=True)
    flat = [torch.cat([g.reshape(-1) for g in gs[: len(enc)]]) for gs in (g_det, g_pred)]
    dot, sq1, sq2 = (flat[0] @ flat[1]), flat[0] @ flat[0], flat[1] @ flat[1]
    assert dot < 0, "the toy data must make the two tasks conflict on the shared encoder"
    expected = flat[0] - dot / sq2 * flat[1] + flat[1] - dot / sq1 * flat[0]
    torch.testing.assert_close(expected, pcgrad(flat[0], flat[1], granularity="batch"))

    balancer = ParamPCGrad(model, world_size=1)
    balancer.backward([l_det, l_pred])
    got = torch.cat([p.grad.reshape(-1) for p in enc])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    for p, g in zip(model.det_head.parameters(), g_det[len(enc):]):
        torch.testing.assert_close(p.grad, g)
    for p, g in zip(model.pred_head.parameters(), g_pred[len(enc):]):
        torch.testing.assert_close(p.grad, g)
    assert balancer.last_stats is not None and float(balancer.last_stats.cosine) == pytest.approx(
        float(dot / (sq1 * sq2).sqrt()), rel=1e-4)


def test_param_pcgrad_accumulates_like_backward():
    x, det_t, pred_t = make_data(1)[0]
    model = make_model(TaskFork())
    balancer = ParamPCGrad(model, world_size=1)
    for _ in range(2):
        det, pred, _ = model(x)
        balancer.backward(task_losses(det, pred, det_t, pred_t))
    twice = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    det, pred, _ = model(x)
    balancer.backward(task_losses(det, pred, det_t, pred_t))
    for a, b in zip(twice, model.parameters()):
        torch.testing.assert_close(a, 2 * b.grad)
    with pytest.raises(ValueError, match="exactly 2"):
        balancer.backward([torch.tensor(1.0)])


def test_param_pcgrad_refuses_zero_deepspeed_ddp_and_several_processes_with_a_reason():
    class DeepSpeedEngine(nn.Module):  # the name DeepSpeed's engine class has
        def __init__(self):
            super().__init__()
            self.module = nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match="docs/MODEL.md.*DeepSpeedEngine"):
        ParamPCGrad(DeepSpeedEngine(), world_size=1)
    zero3 = nn.Linear(2, 2)
    zero3.weight.ds_id = 0  # what ZeRO-3 puts on the parameters it partitions
    with pytest.raises(RuntimeError, match="ZeRO"):
        ensure_param_pcgrad_supported(zero3, 1)
    with pytest.raises(RuntimeError, match="docs/MODEL.md.*2 processes"):  # the runtime's world size
        ParamPCGrad(nn.Linear(2, 2), world_size=2)
    ensure_param_pcgrad_supported(nn.Linear(2, 2), 1)  # plain single process: fine


def test_param_pcgrad_balancing_takes_the_world_size_from_the_runtime_at_attach():
    strategy = BALANCINGS["param_pcgrad"](BalancingConfig(method="param_pcgrad"))
    model = make_model(TaskFork())
    with pytest.raises(RuntimeError, match="3 processes"):
        strategy.attach(model, model, SimpleNamespace(world_size=3))
    strategy.attach(model, model, SimpleNamespace(world_size=1))
    x, det_t, pred_t = make_data(1)[0]
    det, pred, _ = model(x)
    strategy.backward(SimpleNamespace(), task_losses(det, pred, det_t, pred_t), torch.tensor(0.0), boundary=True)
    assert all(p.grad is not None for p in model.parameters())


def test_balancing_config_validation_and_fork_choice():
    holder = SimpleNamespace(task_fork=TaskFork())  # what configure_model touches of a V2XModel
    fork = BALANCINGS["fork"](BalancingConfig())
    fork.configure_model(holder)
    assert isinstance(holder.task_fork, ConflictFork) and holder.task_fork.all_reduce is None
    runtime = SimpleNamespace(all_reduce_sum=sum_over_ranks)
    fork.attach(holder, None, runtime)  # the runtime's collective serves the batch-level rules
    assert holder.task_fork.all_reduce is sum_over_ranks
    for method in ("uncertainty", "param_pcgrad"):
        holder = SimpleNamespace(task_fork=TaskFork())
        BALANCINGS[method](BalancingConfig(method=method)).configure_model(holder)
        assert type(holder.task_fork) is TaskFork
    with pytest.raises(ValueError, match="method"):
        BalancingConfig(method="gradnorm")
    with pytest.raises(ValueError, match="uncertainty_init_log_var"):
        BalancingConfig(uncertainty_init_log_var=100.0)
    with pytest.raises(ValueError, match="fork"):
        BalancingConfig(fork={"rule": "pcgrad"})


def test_sum_over_ranks_is_the_identity_in_one_process():
    t = torch.arange(3.0)
    assert sum_over_ranks(t) is t
