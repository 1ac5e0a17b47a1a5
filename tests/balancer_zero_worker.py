"""Worker for tests/test_balancer_zero.py: trains a toy two-task model with ConflictFork under
DeepSpeed ZeRO on CPU (gloo) for several configurations in one launch; rank 0 saves the final
parameters (and the bf16 losses) to ``--out``. Also imported by the test for the toy model,
the data and the scenario list, so worker and reference share one definition.

Run: DS_ACCELERATOR=cpu torchrun --nproc_per_node 2 tests/balancer_zero_worker.py --out res.pt
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.balancer import BalancerConfig, ConflictFork
from models.balancer.task_fork import TaskFork

WORLD = 2
MICRO_BATCH = 2
STEPS = 3
LR = 0.05
BF16_STEPS = 12
BF16_LR = 0.3


@dataclass(kw_only=True)
class Scenario:
    """One ZeRO training configuration checked against the single-process reference."""

    stage: int
    grad_accum: int
    rule: str
    granularity: str
    balance_magnitude: bool = False

    @property
    def name(self) -> str:
        bal = "+mag" if self.balance_magnitude else ""
        return f"zero{self.stage}-ga{self.grad_accum}-{self.rule}-{self.granularity}{bal}"

    def balancer(self) -> BalancerConfig:
        return BalancerConfig(rule=self.rule, granularity=self.granularity, balance_magnitude=self.balance_magnitude)


SCENARIOS = [
    Scenario(stage=1, grad_accum=1, rule="pcgrad", granularity="sample"),
    Scenario(stage=1, grad_accum=2, rule="pcgrad", granularity="batch", balance_magnitude=True),
    Scenario(stage=2, grad_accum=1, rule="pcgrad", granularity="cell", balance_magnitude=True),
    Scenario(stage=2, grad_accum=2, rule="mgda", granularity="sample"),
    Scenario(stage=3, grad_accum=1, rule="pcgrad", granularity="batch", balance_magnitude=True),
    Scenario(stage=3, grad_accum=2, rule="pcgrad", granularity="sample"),
]


class ToyTwoTask(nn.Module):
    """Conv encoder -> Z [B, 8, H, W] -> fork -> detection head [B, 2, H, W], prediction head [B, 4, H, W]."""

    def __init__(self, fork: TaskFork) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1))
        self.task_fork = fork
        self.det_head = nn.Conv2d(8, 2, 1)
        self.pred_head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 4, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self.encoder(x)
        z_det, z_pred = self.task_fork(z)
        return self.det_head(z_det), self.pred_head(z_pred), z


def make_model(fork: TaskFork) -> ToyTwoTask:
    torch.manual_seed(0)
    return ToyTwoTask(fork)


def make_data(num_micro_steps: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per global micro-step: x [WORLD * MICRO_BATCH, 3, 6, 6] and the two targets."""
    gen = torch.Generator().manual_seed(1)
    n = WORLD * MICRO_BATCH
    out = []
    for _ in range(num_micro_steps):
        x = torch.randn(n, 3, 6, 6, generator=gen)
        det_t = torch.randn(n, 2, 6, 6, generator=gen)
        # the prediction target pulls against detection on some samples: genuine conflicts
        pred_t = torch.randn(n, 4, 6, 6, generator=gen) - det_t.sum(1, keepdim=True)
        out.append((x, det_t, pred_t))
    return out


def task_losses(det: Tensor, pred: Tensor, det_t: Tensor, pred_t: Tensor) -> tuple[Tensor, Tensor]:
    return (det.float() - det_t).square().mean(), (pred.float() - pred_t).square().mean()


def ds_config(stage: int, grad_accum: int, *, bf16: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": MICRO_BATCH,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": MICRO_BATCH * grad_accum * WORLD,
        "zero_optimization": {"stage": stage, "overlap_comm": stage > 1, "contiguous_gradients": stage > 1},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
    }


def _train(engine, data, steps: int, grad_accum: int, rank: int, dtype: torch.dtype) -> list[float]:
    lo, hi = rank * MICRO_BATCH, (rank + 1) * MICRO_BATCH
    losses = []
    for step in range(steps):
        for k in range(grad_accum):
            x, det_t, pred_t = data[step * grad_accum + k]
            det, pred, _ = engine(x[lo:hi].to(dtype))
            l_det, l_pred = task_losses(det, pred, det_t[lo:hi], pred_t[lo:hi])
            loss = l_det + l_pred
            engine.backward(loss)
            engine.step()
            losses.append(float(loss.detach()))
    return losses


def _full_params(engine) -> dict[str, Tensor]:
    import deepspeed

    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        return {n: p.detach().float().clone() for n, p in engine.module.named_parameters()}


def main() -> None:
    import deepspeed

    from trainer.runtime import sum_over_ranks  # the trainer's all-reduce for the fork's batch rules

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    deepspeed.init_distributed(dist_backend="gloo")
    rank = int(os.environ["RANK"])
    results: dict[str, object] = {}
    for sc in SCENARIOS:
        model = make_model(ConflictFork(sc.balancer(), all_reduce=sum_over_ranks))
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds_config(sc.stage, sc.grad_accum, bf16=False))
        _train(engine, make_data(STEPS * sc.grad_accum), STEPS, sc.grad_accum, rank, torch.float32)
        results[sc.name] = _full_params(engine)
        stats = engine.module.task_fork.last_stats
        results[sc.name + "/stats"] = stats.to_floats() if stats is not None else None
        engine.destroy()
    model = make_model(ConflictFork(BalancerConfig(rule="pcgrad", granularity="sample"), all_reduce=sum_over_ranks))
    opt = torch.optim.SGD(model.parameters(), lr=BF16_LR, momentum=0.9)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds_config(2, 1, bf16=True))
    data = make_data(1) * BF16_STEPS  # the same batch every step: the loss must fall
    results["bf16-zero2/losses"] = _train(engine, data, BF16_STEPS, 1, rank, torch.bfloat16)
    results["bf16-zero2/finite"] = all(bool(torch.isfinite(p).all()) for p in _full_params(engine).values())
    if rank == 0:
        torch.save(results, args.out)


if __name__ == "__main__":
    main()
