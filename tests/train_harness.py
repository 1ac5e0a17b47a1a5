"""Helpers for end-to-end tests of ``launch/train.py``: a tiny cached dataset and launcher commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trainer.data.synth.dataset import SyntheticDataConfig, prepare_synthetic, shard_patterns

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "launch" / "train.py")

# One small synthetic dataset shared by every trainer test (generated once per cache folder).
TINY_DATA = SyntheticDataConfig(train_scenarios=1, val_scenarios=1, frames=60, sample_stride=5)


def tiny_shards(cache: Path) -> tuple[str, str]:
    """(train, val) shard lists of the tiny dataset, generated into ``cache`` on first use."""
    cfg = SyntheticDataConfig(**{**TINY_DATA.__dict__, "cache_dir": str(cache)})
    root = prepare_synthetic(cfg, max_agents=4, history=5, log=lambda msg: None)
    return shard_patterns(root)


def base_overrides(train: str, val: str, run_dir: Path, *, steps: int = 4) -> list[str]:
    """A fast single-stage multitask run on the tiny data (fp32, no workers, no tensorboard)."""
    return [
        f"data.train_shards={train}", f"data.val_shards={val}", "data.num_workers=0", "data.batch_size=1",
        "data.samples_per_epoch=8", "data.val_samples=4", "data.shuffle_buffer=4", f"run.dir={run_dir}",
        "loop.progress_bar=false", "loop.tensorboard=false", "loop.log_every=1", "loop.eval_batches=2",
        "precision=fp32", f"stages.finetune.steps={steps}", "loop.pictures=0",
    ]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update({"OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false",
              "PYTHONUNBUFFERED": "1"})
    e.update(extra)
    return e


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_cmd(launcher: str, nprocs: int, args: list[str]) -> list[str]:
    """The command line of ``launch/train.py`` under ``python`` / ``accelerate`` / ``deepspeed`` / ``torchrun``."""
    if launcher == "python":
        return [sys.executable, TRAIN, *args]
    if launcher == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nprocs),
                "--num_machines", "1", "--multi_gpu" if nprocs > 1 else "--cpu", "--main_process_port",
                str(free_port()), TRAIN, *args]
    if launcher == "deepspeed":
        return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nprocs), "--master_port",
                str(free_port()), TRAIN, *args]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nprocs), "--master_port",
                str(free_port()), TRAIN, *args]
    raise ValueError(launcher)


def run_train(launcher: str, nprocs: int, args: list[str], *, timeout: int = 600,
              extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(launch_cmd(launcher, nprocs, args), cwd=REPO, env=env(**(extra_env or {})),
                          capture_output=True, text=True, timeout=timeout)


def crash_then_resume(launcher: str, nprocs: int, args: list[str], run_dir: Path, *, stage: str = "finetune",
                      last_checkpoint: str = "step_000002") -> subprocess.CompletedProcess:
    """Run ``args`` (which include a ``faults.crash_at_step``) once, check that it failed with ``last_checkpoint``
    as the stage's latest checkpoint, then run the same command again and return that second run (the resume)."""
    first = run_train(launcher, nprocs, args)
    assert first.returncode != 0, "the crash run was meant to fail"
    pointer = json.loads((run_dir / stage / "checkpoints" / "latest.json").read_text())
    assert pointer["latest"] == last_checkpoint, pointer
    second = run_train(launcher, nprocs, args)
    assert second.returncode == 0, f"exit {second.returncode}\n{second.stdout[-3000:]}\n{second.stderr[-4000:]}"
    assert "resumed from" in second.stdout
    return second
