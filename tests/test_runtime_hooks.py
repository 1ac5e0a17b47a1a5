"""The runtime hooks the ZeRO memory bench builds its engines with (one process, gloo on the CPU): a probe that runs
after the boundary's backward and before DeepSpeed's optimizer step, and ``close``, after which the same process
creates a runtime with another DeepSpeed config."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from bench.common import free_port
from trainer.config_io import load_config
from trainer.runtime import Runtime, process_group


@pytest.fixture
def one_launched_process(monkeypatch):
    """A launcher's environment for one process (restored afterwards), and no process group left behind."""
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    if not torch.cuda.is_available():
        monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    yield
    process_group.leave_process_group()


def test_the_probe_runs_before_the_optimizer_step_and_close_lets_the_process_build_another_engine(
        one_launched_process):
    for stage in (1, 3):  # two DeepSpeed plugins in one process: Accelerate refuses that without close()
        cfg = load_config(None, ["model_size=tiny", "precision=fp32", "data.batch_size=4",
                                 "distributed.engine=deepspeed", f"distributed.zero_stage={stage}"])
        rt = Runtime.create(cfg)
        torch.manual_seed(0)
        model = nn.Linear(3, 2)  # small enough to stay unpartitioned under ZeRO-3: its weight is readable
        initial = model.weight.detach().clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        engine, optimizer, scheduler = rt.prepare(model, optimizer, scheduler)
        assert rt.zero_stage == stage and engine.zero_optimization_stage() == stage
        seen: list[tuple[int, torch.Tensor]] = []
        loss = engine(torch.ones(4, 3, device=rt.device)).sum()
        rt.backward(loss, before_step=lambda: seen.append((engine.global_steps, engine.module.weight.detach().clone())))
        assert len(seen) == 1 and seen[0][0] == 0  # once, before DeepSpeed's step
        torch.testing.assert_close(seen[0][1].cpu(), initial)
        assert engine.global_steps == 1 and not torch.equal(engine.module.weight.detach().cpu(), initial)
        assert "step" not in vars(engine)  # the engine's own step method again
        del engine, optimizer, scheduler
        rt.close()
        assert "ACCELERATE_USE_DEEPSPEED" not in os.environ  # as before create: a plain runtime may follow
