"""ConflictFork under DeepSpeed ZeRO 1/2/3 on 2 real CPU processes equals a single-process reference.

One torchrun launch of tests/balancer_zero_worker.py trains every scenario; this process rebuilds
each one explicitly (per-task gradients on Z with torch.autograd.grad, the rule, Z.backward of
the combined gradient, the same SGD step) over the full global batch and compares parameters.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tests.balancer_zero_worker as worker
from models.balancer import combine
from models.balancer.task_fork import TaskFork

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def zero_results(tmp_path_factory) -> dict:
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("zero") / "results.pt"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(worker.WORLD),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(REPO / "tests" / "balancer_zero_worker.py"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return torch.load(out)


def reference_params(sc: worker.Scenario) -> dict[str, torch.Tensor]:
    """Single-process training over the global batch with the rule applied explicitly."""
    model = worker.make_model(TaskFork())
    opt = torch.optim.SGD(model.parameters(), lr=worker.LR, momentum=0.9)
    det_params, pred_params = list(model.det_head.parameters()), list(model.pred_head.parameters())
    data = worker.make_data(worker.STEPS * sc.grad_accum)
    for step in range(worker.STEPS):
        opt.zero_grad(set_to_none=True)
        for k in range(sc.grad_accum):
            x, det_t, pred_t = data[step * sc.grad_accum + k]
            z = model.encoder(x)
            l_det, l_pred = worker.task_losses(model.det_head(z), model.pred_head(z), det_t, pred_t)
            g_det, *det_grads = torch.autograd.grad(l_det, [z, *det_params], retain_graph=True)
            g_pred, *pred_grads = torch.autograd.grad(l_pred, [z, *pred_params], retain_graph=True)
            cfg = sc.balancer()
            combined = combine(g_det, g_pred, rule=cfg.rule, granularity=cfg.granularity,
                               balance_magnitude=cfg.balance_magnitude, eps=cfg.eps)
            z.backward(combined / sc.grad_accum)
            for p, g in zip(det_params + pred_params, det_grads + pred_grads):
                p.grad = g / sc.grad_accum if p.grad is None else p.grad + g / sc.grad_accum
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("sc", worker.SCENARIOS, ids=lambda sc: sc.name)
def test_zero_matches_single_process_reference(zero_results, sc):
    got, ref = zero_results[sc.name], reference_params(sc)
    assert set(got) == set(ref)
    initial = {n: p.detach() for n, p in worker.make_model(TaskFork()).named_parameters()}
    moved = max(float((ref[n] - initial[n]).abs().max()) for n in ref)
    assert moved > 1e-3, "the reference did not train: the comparison would be vacuous"
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=1e-6, msg=lambda m, n=name: f"{sc.name} {n}: {m}")
    stats = zero_results[sc.name + "/stats"]
    assert stats is not None and -1.0 <= stats["cosine"] <= 1.0 and 0.0 <= stats["conflict_fraction"] <= 1.0


@pytest.mark.slow
def test_reference_depends_on_the_rule(zero_results):
    """The rule changes the trained parameters, so matching the reference is a real check."""
    sc = worker.SCENARIOS[0]
    plain = worker.Scenario(stage=sc.stage, grad_accum=sc.grad_accum, rule="sum", granularity=sc.granularity)
    ref, ref_sum = reference_params(sc), reference_params(plain)
    assert max(float((ref[n] - ref_sum[n]).abs().max()) for n in ref) > 1e-4


@pytest.mark.slow
def test_bf16_zero2_trains_with_the_fork(zero_results):
    losses = zero_results["bf16-zero2/losses"]
    assert len(losses) == worker.BF16_STEPS and all(math.isfinite(v) for v in losses)
    assert zero_results["bf16-zero2/finite"]
    assert losses[-1] < 0.8 * losses[0], losses
