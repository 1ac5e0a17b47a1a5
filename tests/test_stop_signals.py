"""Stop signals and data stalls end a run promptly: the watcher, the stall alarm, and both through
``launch/train.py`` while the training data is stalled in a read that never returns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from launch.train import EXIT_BAD_INPUT, EXIT_PREEMPTED
from tests.train_harness import REPO, TRAIN, base_overrides, env
from trainer.engine.batch_stream import BatchStream
from trainer.engine.signals import PreemptionWatcher, StopNow, StopRequested
from trainer.engine.stall import DataStallError, StallAlarm

RECIPE = ["--config", "recipes/multitask.yaml"]


@pytest.fixture
def watcher():
    w = PreemptionWatcher().install()
    yield w
    w.uninstall()


def test_a_signal_while_waiting_for_data_stops_at_once(watcher):
    start = time.monotonic()
    with pytest.raises(StopRequested, match="SIGTERM while waiting for data"):
        with watcher.interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
    assert time.monotonic() - start < 5 and watcher.requested


def test_a_signal_during_a_step_only_sets_the_flag_and_a_second_one_stops_now(watcher):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)
    assert watcher.requested and watcher.signal_name == "SIGINT"
    with pytest.raises(StopRequested):  # a stop already requested ends the next data wait before it starts
        with watcher.interruptible():
            pass
    with pytest.raises(StopNow):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)


def test_uninstall_restores_the_previous_handlers():
    before = signal.getsignal(signal.SIGTERM)
    w = PreemptionWatcher().install()
    assert signal.getsignal(signal.SIGTERM) != before
    w.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_grace_period_bounds_a_stop_that_never_reaches_a_step_boundary():
    child = textwrap.dedent("""
        import os, signal, time
        from trainer.engine.signals import PreemptionWatcher
        PreemptionWatcher(grace_s=0.5).install()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # a step that never ends
    """)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", child], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == EXIT_PREEMPTED and time.monotonic() - start < 30
    assert "no clean stop within 0.5 s of SIGTERM" in proc.stderr


def test_the_stall_alarm_warns_then_raises_and_leaves_nothing_armed():
    warnings: list[str] = []
    alarm = StallAlarm(timeout_s=0.8, what="data.train_shards='x.tar'", warn=warnings.append)
    start = time.monotonic()
    with pytest.raises(DataStallError, match=r"stalled reading data.train_shards='x.tar'"):
        with alarm.waiting():
            time.sleep(30)
    assert time.monotonic() - start < 5
    assert len(warnings) == 1 and "may be stalled" in warnings[0]
    with alarm.waiting():  # a wait that ends in time disarms the alarm
        time.sleep(0.05)
    time.sleep(1.0)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with StallAlarm(timeout_s=0, what="x").waiting():  # 0 disables
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_stop_while_a_resume_is_still_skipping_keeps_the_whole_skip():
    def epoch(e):
        for i in range(10):
            if i == 3:
                raise StopRequested("in the skip")
            yield i

    stream = BatchStream(epoch, epoch=2, skip=5)
    with pytest.raises(StopRequested):
        next(stream)
    assert stream.position == (2, 5)


def _start_stalled_run(tmp_path: Path, tiny_data, *extra: str) -> tuple[subprocess.Popen, Path]:
    train, val = tiny_data
    run_dir = tmp_path / "run"
    args = [*RECIPE, *base_overrides(train, val, run_dir, steps=4), "loop.checkpoint_every=100",
            "faults.stall_at_step=2", *extra]
    proc = subprocess.Popen([sys.executable, TRAIN, *args], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, run_dir


def _latest(run_dir: Path) -> str:
    return json.loads((run_dir / "finetune" / "checkpoints" / "latest.json").read_text())["latest"]


@pytest.mark.slow
def test_sigterm_during_a_data_stall_checkpoints_and_exits_75_then_resumes(tiny_data, tmp_path):
    proc, run_dir = _start_stalled_run(tmp_path, tiny_data)
    deadline = time.monotonic() + 240
    while not (run_dir / ".fault-stall").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the stall"
        time.sleep(0.2)
    time.sleep(1.0)  # it is blocked in the read now
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert time.monotonic() - sent < 60
    assert "SIGTERM while waiting for data; checkpoint saved at step 2" in err
    assert _latest(run_dir) == "step_000002"
    resumed = subprocess.run([sys.executable, TRAIN, *RECIPE, *base_overrides(*tiny_data, run_dir, steps=4),
                              "loop.checkpoint_every=100", "faults.stall_at_step=2"],
                             cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 2" in resumed.stdout
    assert json.loads((run_dir / "finetune" / "final.json").read_text())["steps"] == 4


@pytest.mark.slow
def test_a_stalled_loader_is_reported_and_stops_the_run_with_exit_2(tiny_data, tmp_path):
    proc, run_dir = _start_stalled_run(tmp_path, tiny_data, "loop.stall_timeout_s=2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_BAD_INPUT, err[-3000:]
    assert "warning: no training batch for" in err and "the data loader is stalled reading data.train_shards=" in err
    assert "checkpoint saved at step 2" in err
    assert _latest(run_dir) == "step_000002"
