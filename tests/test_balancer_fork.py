"""ConflictFork in one process: per-task gradients, the combined encoder gradient, missing tasks, stats."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.balancer_zero_worker import ToyTwoTask, make_data, make_model, task_losses
from models.balancer import BalancerConfig, ConflictFork, ConflictStats, combine
from models.balancer.task_fork import TaskFork


def batch():
    x, det_t, pred_t = make_data(1)[0]
    return x, det_t, pred_t


def encoder_grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.encoder.parameters()]


@pytest.mark.parametrize("cfg", [BalancerConfig(rule="pcgrad", granularity="sample"),
                                 BalancerConfig(rule="mgda", granularity="cell", balance_magnitude=True),
                                 BalancerConfig(rule="sum", granularity="batch", balance_magnitude=True)])
def test_fork_equals_explicit_reference_and_heads_get_their_own_task(cfg):
    x, det_t, pred_t = batch()
    model = make_model(ConflictFork(cfg))
    det, pred, _ = model(x)
    l_det, l_pred = task_losses(det, pred, det_t, pred_t)
    (l_det + l_pred).backward()

    ref = make_model(TaskFork())
    z = ref.encoder(x)
    r_det, r_pred = task_losses(ref.det_head(z), ref.pred_head(z), det_t, pred_t)
    det_params, pred_params = list(ref.det_head.parameters()), list(ref.pred_head.parameters())
    g_det, *det_own = torch.autograd.grad(r_det, [z, *det_params], retain_graph=True)
    g_pred, *pred_own = torch.autograd.grad(r_pred, [z, *pred_params], retain_graph=True)
    z.backward(combine(g_det, g_pred, rule=cfg.rule, granularity=cfg.granularity, balance_magnitude=cfg.balance_magnitude))

    for got, want in zip(encoder_grads(model), encoder_grads(ref)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    for p, g in zip(model.det_head.parameters(), det_own):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
    for p, g in zip(model.pred_head.parameters(), pred_own):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


def test_pcgrad_fork_differs_from_the_plain_sum_on_conflicting_tasks():
    x, det_t, pred_t = batch()
    grads = []
    for fork in (ConflictFork(BalancerConfig(rule="pcgrad", granularity="cell")), TaskFork()):
        model = make_model(fork)
        det, pred, _ = model(x)
        sum(task_losses(det, pred, det_t, pred_t)).backward()
        grads.append(encoder_grads(model))
    assert any(not torch.allclose(a, b) for a, b in zip(*grads))


@pytest.mark.parametrize("rule", ["pcgrad", "mgda"])
@pytest.mark.parametrize("mode", ["unused", "zero"])
def test_a_task_without_targets_leaves_the_other_gradient_unchanged(rule, mode):
    """Prediction has no targets: its head is skipped (None gradient) or its loss is 0 * output."""
    x, det_t, _ = batch()
    fork = ConflictFork(BalancerConfig(rule=rule, granularity="sample", balance_magnitude=True))
    model = make_model(fork)
    det, pred, _ = model(x)
    l_det = (det - det_t).square().mean()
    loss = l_det if mode == "unused" else l_det + 0.0 * pred.sum()
    loss.backward()
    ref = make_model(TaskFork())
    (ref.det_head(ref.encoder(x)) - det_t).square().mean().backward()
    for got, want in zip(encoder_grads(model), encoder_grads(ref)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    stats = fork.last_stats.to_floats()
    assert stats["cosine"] == 0.0 and stats["conflict_fraction"] == 0.0 and stats["norm_ratio"] == float("inf")


def test_loss_scale_commutes_with_the_fork():
    x, det_t, pred_t = batch()
    grads = []
    for scale in (1.0, 1024.0):
        model = make_model(ConflictFork(BalancerConfig(rule="pcgrad", granularity="batch", balance_magnitude=True)))
        det, pred, _ = model(x)
        (scale * sum(task_losses(det, pred, det_t, pred_t))).backward()
        grads.append(encoder_grads(model))
    for small, big in zip(*grads):
        torch.testing.assert_close(big, 1024.0 * small, rtol=1e-5, atol=1e-6)


def test_stats_are_detached_device_tensors_refreshed_every_backward():
    x, det_t, pred_t = batch()
    fork = ConflictFork(BalancerConfig(rule="pcgrad", granularity="sample"))
    model = make_model(fork)
    assert fork.last_stats is None
    det, pred, _ = model(x)
    sum(task_losses(det, pred, det_t, pred_t)).backward()
    first = fork.last_stats
    assert isinstance(first, ConflictStats)
    for t in (first.cosine, first.conflict_fraction, first.norm_ratio):
        assert isinstance(t, torch.Tensor) and t.dim() == 0 and not t.requires_grad
    det, pred, _ = model(x)
    (task_losses(det, pred, det_t, pred_t)[0] - task_losses(det, pred, det_t, pred_t)[1]).backward()
    assert fork.last_stats is not first
    assert float(fork.last_stats.cosine) == pytest.approx(-float(first.cosine), abs=1e-6)
    no_stats = ConflictFork(BalancerConfig(rule="pcgrad", collect_stats=False))
    a, b = no_stats(torch.randn(2, 3, 4, 4, requires_grad=True))
    (a.sum() - b.sum()).backward()
    assert no_stats.last_stats is None


def test_bf16_feature_gets_a_bf16_gradient():
    z = torch.randn(2, 4, 3, 3, dtype=torch.bfloat16, requires_grad=True)
    fork = ConflictFork(BalancerConfig(rule="pcgrad", granularity="cell"))
    a, b = fork(z)
    g1, g2 = torch.randn_like(z), torch.randn_like(z)
    torch.autograd.backward([a, b], [g1, g2])
    assert z.grad.dtype == torch.bfloat16
    torch.testing.assert_close(z.grad, combine(g1, g2, rule="pcgrad", granularity="cell"), rtol=0, atol=0)


def test_without_grad_the_fork_is_the_identity():
    fork = ConflictFork()
    z = torch.randn(2, 3, 4, 4)
    a, b = fork(z)
    assert a is z and b is z
    with torch.no_grad():
        leaf = torch.randn(2, 3, 4, 4, requires_grad=True)
        a, b = fork(leaf)
        assert a is leaf and b is leaf and a.grad_fn is None


def test_fork_is_a_task_fork_and_rejects_unbatched_input():
    fork = ConflictFork(BalancerConfig(rule="mgda"))
    assert isinstance(fork, TaskFork) and fork.num_tasks == 2 and "mgda" in repr(fork)
    with pytest.raises(ValueError, match="batched"):
        fork(torch.randn(5, requires_grad=True))


def test_toy_model_keeps_one_fork_between_encoder_and_heads():
    model = ToyTwoTask(ConflictFork())
    calls = []
    model.task_fork.register_forward_hook(lambda m, i, o: calls.append(o))
    det, pred, z = model(torch.randn(1, 3, 6, 6))
    assert len(calls) == 1 and det.shape == (1, 2, 6, 6) and pred.shape == (1, 4, 6, 6) and z.shape == (1, 8, 6, 6)


def _real_model_and_batch():
    from tests.batch_factory import make_batch
    from models.config import model_config
    from models.v2x_model import V2XModel

    cfg = model_config("tiny")
    torch.manual_seed(0)
    return V2XModel(cfg), make_batch(cfg, num_scenes=2, agents=2, seed=0)


def test_real_model_heads_reach_the_encoder_only_through_the_fork():
    """A fork that detaches Z cuts every head path: no head loss may reach the encoder otherwise."""
    from trainer.losses.task_losses import task_losses as v2x_losses

    class DetachingFork(TaskFork):
        def forward(self, z):
            return z.detach(), z.detach()

    model, b = _real_model_and_batch()
    model.task_fork = DetachingFork()
    v2x_losses(model(b), b, model.geometry).total.backward()
    leaked = [n for n, p in model.named_parameters()
              if not n.startswith(("det_head", "pred_head")) and p.grad is not None and p.grad.abs().max() > 0]
    assert leaked == []


def test_real_model_with_conflict_fork_trains_and_reports_stats():
    from trainer.losses.task_losses import task_losses as v2x_losses

    model, b = _real_model_and_batch()
    fork = ConflictFork(BalancerConfig(rule="pcgrad", granularity="cell", balance_magnitude=True))
    model.task_fork = fork
    losses = v2x_losses(model(b), b, model.geometry)
    det_own = torch.autograd.grad(losses.detection, list(model.det_head.parameters()), retain_graph=True)
    losses.total.backward()
    for p, g in zip(model.det_head.parameters(), det_own):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    stats = fork.last_stats.to_floats()
    assert -1.0 <= stats["cosine"] <= 1.0 and 0.0 <= stats["conflict_fraction"] <= 1.0 and stats["norm_ratio"] > 0
