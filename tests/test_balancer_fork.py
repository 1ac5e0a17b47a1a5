"""ConflictFork in one process: per-task gradients, the combined encoder gradient, missing tasks, stats."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from balancer_zero_worker import ToyTwoTask, make_data, make_model, task_losses
from models.balancer import BalancerConfig, ConflictFork, ConflictStats, combine
from models.fork import TaskFork


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
