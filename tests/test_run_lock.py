"""The run-directory lock: one run per run directory, stale locks taken over, every rank told."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launch.train import EXIT_BAD_INPUT, main
from trainer.checkpointing.run_lock import (
    LOCK_FILE,
    LockOwner,
    RunLockError,
    acquire_run_lock,
    hold_run_lock,
    read_owner,
)
from tests.train_harness import REPO, base_overrides, env

RECIPE = ["--config", "recipes/multitask.yaml"]
IN_PROCESS = ["distributed.engine=plain"]  # in-process runs: Accelerate allows one DeepSpeed plugin per process
# The holder takes the lock as rank 0 does (O_EXCL, the same JSON record) without importing the trainer (fast).
HOLD = ("import json, os, socket, sys, time\n"
        "fd = os.open(os.path.join(sys.argv[1], 'run.lock'), os.O_WRONLY | os.O_CREAT | os.O_EXCL)\n"
        "os.write(fd, json.dumps({'host': socket.gethostname(), 'pid': os.getpid(),\n"
        "                         'started': '2024-05-01T12:00:00Z'}).encode()); os.close(fd)\n"
        "print('held', flush=True); time.sleep(60)")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid  # exited and reaped


@pytest.fixture
def holder(tmp_path):
    """A real other process holding the lock of ``tmp_path / 'run'``."""
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield run, proc
    finally:
        proc.kill()
        proc.wait()


def test_lock_records_owner_and_release_removes_it(tmp_path):
    lock = acquire_run_lock(tmp_path, log=lambda msg: None)
    data = json.loads((tmp_path / LOCK_FILE).read_text())
    assert data["host"] == socket.gethostname() and data["pid"] == os.getpid() and data["started"].endswith("Z")
    assert read_owner(tmp_path / LOCK_FILE) == lock.owner
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_held_by_a_live_process_is_refused(holder):
    run, proc = holder
    with pytest.raises(RunLockError) as info:
        acquire_run_lock(run, log=lambda msg: None)
    text = str(info.value)
    assert f"pid {proc.pid}" in text and socket.gethostname() in text and str(run / LOCK_FILE) in text
    assert "started " in text and "Wait for it to finish" in text
    assert read_owner(run / LOCK_FILE).pid == proc.pid  # untouched


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_message(tmp_path):
    stale = LockOwner(host=socket.gethostname(), pid=dead_pid(), started="2020-01-01T00:00:00Z")
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale.__dict__))
    said: list[str] = []
    lock = acquire_run_lock(tmp_path, log=said.append)
    assert read_owner(tmp_path / LOCK_FILE) == lock.owner
    assert (lock.owner.host, lock.owner.pid) == (socket.gethostname(), os.getpid())
    assert len(said) == 1 and "taking over the stale lock" in said[0] and f"pid {stale.pid}" in said[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]  # nothing left aside
    lock.release()


def test_lock_of_another_host_counts_as_held_and_says_how_to_remove_it(tmp_path):
    other = LockOwner(host="node-that-is-not-" + socket.gethostname(), pid=dead_pid(), started="2020-01-01T00:00:00Z")
    (tmp_path / LOCK_FILE).write_text(json.dumps(other.__dict__))
    with pytest.raises(RunLockError, match="another host") as info:
        acquire_run_lock(tmp_path, log=lambda msg: None)
    assert f"rm {tmp_path / LOCK_FILE}" in str(info.value) and other.host in str(info.value)


def test_unreadable_lock_is_held_and_release_spares_a_lock_of_another_owner(tmp_path):
    (tmp_path / LOCK_FILE).write_text("{not json")
    with pytest.raises(RunLockError, match="unreadable lock file"):
        acquire_run_lock(tmp_path, log=lambda msg: None)
    (tmp_path / LOCK_FILE).unlink()
    lock = acquire_run_lock(tmp_path, log=lambda msg: None)
    taken_over = LockOwner(host=lock.owner.host, pid=lock.owner.pid + 1, started=lock.owner.started)
    (tmp_path / LOCK_FILE).write_text(json.dumps(taken_over.__dict__))
    lock.release()
    assert read_owner(tmp_path / LOCK_FILE) == taken_over


def test_every_rank_raises_when_rank_0_cannot_lock(holder):
    run, _ = holder
    sent: list[object] = []

    def broadcast(obj):  # rank 0's value reaches the other rank
        sent.append(obj)
        return sent[0]

    for is_main in (True, False):
        with pytest.raises(RunLockError, match="in use by another run"):
            with hold_run_lock(run, is_main=is_main, broadcast=broadcast, log=lambda msg: None):
                pytest.fail("entered a locked run directory")
    assert sent[1] is None  # a non-main rank sends nothing of its own


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with hold_run_lock(tmp_path, is_main=True, broadcast=lambda obj: obj, log=lambda msg: None) as lock:
            assert lock is not None and (tmp_path / LOCK_FILE).exists()
            raise KeyboardInterrupt
    assert not (tmp_path / LOCK_FILE).exists()


def test_not_writable_run_dir_is_a_lock_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(RunLockError, match="is not writable"):
            acquire_run_lock(tmp_path, log=lambda msg: None)
    finally:
        tmp_path.chmod(0o700)


def test_second_run_on_a_held_run_dir_exits_2_naming_the_holder(holder, tiny_data, capsys):
    """A real process holds the run directory; ``launch/train.py`` on it exits 2 and writes nothing there."""
    run, proc = holder
    train, val = tiny_data
    code = main([*RECIPE, *base_overrides(train, val, run), *IN_PROCESS])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert f"pid {proc.pid}" in err and socket.gethostname() in err and str(run / LOCK_FILE) in err
    assert "started 2024-05-01T12:00:00Z" in err
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # no config.yaml, metrics or stage folder


@pytest.mark.parametrize("dir_key", ["run.dir", "run.output_root"])
def test_run_dir_that_cannot_be_created_exits_2(dir_key, tiny_data, tmp_path, capsys):
    """Works as root too: nothing can be created below a regular file."""
    train, val = tiny_data
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    overrides = [o for o in base_overrides(train, val, tmp_path / "unused") if not o.startswith("run.dir=")]
    code = main([*RECIPE, *overrides, f"{dir_key}={blocker / 'sub'}", *IN_PROCESS])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "cannot create the run directory" in err and f"writable {dir_key}" in err and str(blocker) in err


def test_stale_lock_is_taken_over_by_a_run_that_then_releases_it(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    stale = LockOwner(host=socket.gethostname(), pid=dead_pid(), started="2020-01-01T00:00:00Z")
    (run / LOCK_FILE).write_text(json.dumps(stale.__dict__))
    train, val = tiny_data
    code = main([*RECIPE, *base_overrides(train, val, run, steps=1), "stages.finetune.evaluate=false",
                 *IN_PROCESS])
    out = capsys.readouterr().out
    assert code == 0 and "taking over the stale lock" in out and f"pid {stale.pid}" in out
    assert not (run / LOCK_FILE).exists() and (run / "finetune" / "final.json").exists()


def test_an_unexpected_failure_of_rank_0_still_reaches_the_other_ranks(tmp_path, monkeypatch):
    import trainer.checkpointing.run_lock as run_lock

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(run_lock, "acquire_run_lock", broken)
    sent: list[object] = []
    with pytest.raises(RuntimeError, match="disk on fire"):  # rank 0: the original error, after telling the others
        with hold_run_lock(tmp_path, is_main=True, broadcast=lambda obj: sent.append(obj) or obj):
            pass
    with pytest.raises(RunLockError, match="rank 0 failed to lock .*disk on fire"):
        with hold_run_lock(tmp_path, is_main=False, broadcast=lambda obj: sent[0]):
            pass


@pytest.mark.slow
def test_two_real_training_runs_on_one_run_dir(tiny_data, tmp_path):
    """The first ``launch/train.py`` holds the directory (its data stalled, so it stays mid-run); a second one on
    the same ``run.dir`` exits 2 naming it and leaves the first's metrics and checkpoints alone."""
    import signal
    import time

    from tests.train_harness import TRAIN

    run = tmp_path / "run"
    args = [TRAIN, *RECIPE, *base_overrides(*tiny_data, run, steps=4), "loop.checkpoint_every=1"]
    first = subprocess.Popen([sys.executable, *args, "faults.stall_at_step=2"], cwd=REPO, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / ".fault-stall").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never reached the stall"
            time.sleep(0.2)
        metrics_before = (run / "metrics.jsonl").read_text()
        second = subprocess.run([sys.executable, *args], cwd=REPO, env=env(), capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == EXIT_BAD_INPUT, second.stderr[-3000:]
        assert f"pid {first.pid}" in second.stderr and str(run / LOCK_FILE) in second.stderr
        assert (run / "metrics.jsonl").read_text() == metrics_before
        assert read_owner(run / LOCK_FILE).pid == first.pid
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 75 and not (run / LOCK_FILE).exists()
