"""Faults during multi-process training (CPU, gloo, 2 ranks): NaN losses on one rank, divergence,
and a crashed worker under ``torchrun --max-restarts``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launch.train import EXIT_DIVERGED
from tests.train_harness import REPO, TRAIN, base_overrides, env, free_port, run_train

pytestmark = pytest.mark.slow

RECIPE = ["--config", "recipes/multitask.yaml"]


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _failure(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"


def test_nan_on_one_rank_is_skipped_on_both_and_training_finishes(tiny_data, tmp_path):
    train, val = tiny_data
    run_dir = tmp_path / "run"
    proc = run_train("accelerate", 2, [*RECIPE, *base_overrides(train, val, run_dir, steps=3),
                                       "faults.nan_steps=[1]", "faults.nan_rank=1"], timeout=400)
    assert proc.returncode == 0, _failure(proc)
    records = _records(run_dir)
    skips = [r for r in records if r.get("event") == "nonfinite_loss_skipped"]
    assert [(r["step"], r["skips_total"]) for r in skips] == [(1, 1)]
    assert "step 1: non-finite loss on some rank, step skipped on all ranks (1 in a row)" in proc.stdout
    losses = {r["step"]: r["loss/total"] for r in records if "loss/total" in r}
    assert sorted(losses) == [1, 2, 3] and all(v == v for v in losses.values())
    final = json.loads((run_dir / "finetune" / "final.json").read_text())
    assert final["steps"] == 3 and final["nonfinite_skips"] == 1


def test_repeated_nan_stops_all_ranks_with_a_clear_message(tiny_data, tmp_path):
    """DeepSpeed's launcher passes the workers' exit code through: 3 = diverged, and no rank hangs."""
    train, val = tiny_data
    run_dir = tmp_path / "run"
    proc = run_train("deepspeed", 2, [*RECIPE, *base_overrides(train, val, run_dir, steps=5),
                                      "faults.nan_steps=[1]", "faults.nan_repeats=10", "faults.nan_rank=1",
                                      "loop.max_nonfinite_in_row=2"], timeout=400)
    assert proc.returncode == EXIT_DIVERGED, _failure(proc)
    assert "error: stage finetune: 2 consecutive steps had a non-finite loss (limit " \
           "loop.max_nonfinite_in_row=2)" in proc.stderr
    skips = [r for r in _records(run_dir) if r.get("event") == "nonfinite_loss_skipped"]
    assert [(r["step"], r["skips_total"]) for r in skips] == [(1, 1), (1, 2)]
    assert [r["step"] for r in _records(run_dir) if "loss/total" in r] == [1]
    assert not (run_dir / "finetune" / "final.json").exists()


def test_worker_crash_under_torchrun_restarts_and_resumes(tiny_data, tmp_path):
    train, val = tiny_data
    run_dir = tmp_path / "run"
    # Elastic restarts need the c10d rendezvous (a fresh round per restart); the static one behind
    # --master_port keeps the crashed attempt's peer addresses in its store.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--max-restarts", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", TRAIN, *RECIPE, *base_overrides(train, val, run_dir, steps=4),
           "loop.checkpoint_every=1", "faults.crash_at_step=2", "faults.crash_rank=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, _failure(proc)
    out = proc.stdout + proc.stderr
    assert "[faults] rank 1 crashing after step 2" in out
    assert (run_dir / ".fault-crashed").exists()
    # The crash came after step 2's update but before its checkpoint: the restart resumes from step 1.
    assert f"resumed from {run_dir / 'finetune' / 'checkpoints' / 'step_000001'} at step 1" in out
    steps = [r["step"] for r in _records(run_dir) if "loss/total" in r]
    assert steps == [1, 2, 3, 4], "the crashed attempt's step-2 record is dropped at the resume from step 1"
    final = json.loads((run_dir / "finetune" / "final.json").read_text())
    assert final["steps"] == 4
