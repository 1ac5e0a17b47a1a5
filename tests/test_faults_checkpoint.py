"""A process killed (SIGKILL) in the middle of ``save_checkpoint`` leaves the previous checkpoint
complete, pointed to and loadable; the next save recovers from the leftovers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tests.train_harness import REPO
from trainer.checkpointing.checkpoint import (CorruptCheckpointError, TrainState, latest_checkpoint, read_pointer,
                                              resumable_checkpoint, save_checkpoint, verify_checkpoint)

# The child saves step 2 completely, then starts saving step 4 and blocks at the chosen point until killed.
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    import trainer.checkpointing.checkpoint as ckpt

    ckpt_dir, where = Path(sys.argv[1]), sys.argv[2]
    ready = ckpt_dir.parent / "ready"

    def engine(value):
        def save(path):
            torch.save({"w": torch.full((3,), value)}, path / "model.pt")
            if value == 4.0 and where == "engine":
                (path / "optimizer.pt").write_bytes(b"half-written")
                ready.write_text("")
                time.sleep(600)
        return save

    def save(step, value):
        ckpt.save_checkpoint(ckpt_dir, f"step_{step:06d}", ckpt.TrainState(step=step), save_engine=engine(value),
                             is_main=True, barrier=lambda: None, keep_last=2)

    save(2, 2.0)
    if where == "pointer":
        def hang(path, payload):
            ready.write_text("")
            time.sleep(600)
        ckpt._write_json_atomic = hang
    save(4, 4.0)
""")


def _save(ckpt_dir: Path, step: int, value: float, keep_last: int = 2) -> Path:
    def engine(path: Path) -> None:
        torch.save({"w": torch.full((3,), value)}, path / "model.pt")

    return save_checkpoint(ckpt_dir, f"step_{step:06d}", TrainState(step=step), save_engine=engine, is_main=True,
                           barrier=lambda: None, keep_last=keep_last)


def _kill_during_save(tmp_path: Path, where: str) -> Path:
    ckpt_dir = tmp_path / "checkpoints"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ckpt_dir), where], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ready").exists():
            assert child.poll() is None, f"child exited early with {child.returncode}"
            assert time.monotonic() < deadline, "child never reached the kill point"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return ckpt_dir


@pytest.mark.parametrize("where", ["engine", "pointer"])
def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path, where):
    ckpt_dir = _kill_during_save(tmp_path, where)
    latest = latest_checkpoint(ckpt_dir)
    assert latest == ckpt_dir / "step_000002"
    assert TrainState.from_json(latest / "train_state.json").step == 2
    assert torch.equal(torch.load(latest / "model.pt")["w"], torch.full((3,), 2.0))
    assert read_pointer(ckpt_dir)["history"] == ["step_000002"]
    if where == "engine":  # the half-written save never got its final name
        assert (ckpt_dir / ".tmp-step_000004" / "optimizer.pt").exists()
        assert not (ckpt_dir / "step_000004").exists()
    else:  # renamed, but the pointer had not moved yet: still not the latest
        assert (ckpt_dir / "step_000004" / "train_state.json").exists()


@pytest.mark.parametrize("where", ["engine", "pointer"])
def test_resaving_after_a_killed_save_recovers(tmp_path, where):
    ckpt_dir = _kill_during_save(tmp_path, where)
    final = _save(ckpt_dir, 4, 4.5)
    assert latest_checkpoint(ckpt_dir) == final == ckpt_dir / "step_000004"
    assert torch.equal(torch.load(final / "model.pt")["w"], torch.full((3,), 4.5))
    assert not (final / "optimizer.pt").exists(), "leftovers of the killed save must not leak into the new one"
    assert not (ckpt_dir / ".tmp-step_000004").exists()
    assert read_pointer(ckpt_dir)["history"] == ["step_000002", "step_000004"]


def test_rotation_keeps_the_last_n_and_the_pointer_changes_last(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        _save(ckpt_dir, step, float(step))
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["latest.json", "step_000002", "step_000003"]
    assert json.loads((ckpt_dir / "latest.json").read_text()) == {"latest": "step_000003",
                                                                  "history": ["step_000002", "step_000003"]}


def test_resaving_the_same_step_replaces_it(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    _save(ckpt_dir, 5, 1.0)
    _save(ckpt_dir, 5, 2.0)  # e.g. preempted right after a periodic save
    assert torch.equal(torch.load(ckpt_dir / "step_000005" / "model.pt")["w"], torch.full((3,), 2.0))
    assert read_pointer(ckpt_dir)["history"] == ["step_000005"]


def test_no_checkpoint_and_dangling_pointer(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    assert latest_checkpoint(ckpt_dir) is None
    ckpt_dir.mkdir()
    (ckpt_dir / "latest.json").write_text(json.dumps({"latest": "step_000009", "history": ["step_000009"]}))
    with pytest.raises(FileNotFoundError, match="step_000009, which is missing or incomplete"):
        latest_checkpoint(ckpt_dir)


def _flip_tensor_bytes(path: Path) -> None:
    """Same size, a changed weight: 4.0 (float32) becomes 5.0 inside the archive's data member."""
    raw = path.read_bytes()
    assert raw.count(b"\x00\x00\x80@") == 3
    path.write_bytes(raw.replace(b"\x00\x00\x80@", b"\x00\x00\xa0@", 1))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, reason", [
    (lambda c: _truncate(c / "model.pt"), "model.pt has"),
    (lambda c: _flip_tensor_bytes(c / "model.pt"), "model.pt is damaged (member"),
    (lambda c: _truncate(c / "train_state.json"), "train_state.json is unreadable"),
    (lambda c: (c / "model.pt").unlink(), "model.pt is missing"),
])
def test_a_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, damage, reason):
    ckpt_dir = tmp_path / "checkpoints"
    _save(ckpt_dir, 2, 2.0)
    newest = _save(ckpt_dir, 4, 4.0)
    assert verify_checkpoint(newest) is None
    damage(newest)
    assert reason in verify_checkpoint(newest)
    messages: list[str] = []
    assert resumable_checkpoint(ckpt_dir, log=messages.append) == ckpt_dir / "step_000002"
    assert len(messages) == 1 and str(newest) in messages[0] and reason in messages[0]
    assert newest.exists(), "the corrupt checkpoint is left in place"


def test_a_checkpoint_without_manifest_is_still_checked(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    newest = _save(ckpt_dir, 4, 4.0)
    (newest / "manifest.json").unlink()  # as written before manifests existed
    assert verify_checkpoint(newest) is None
    _truncate(newest / "model.pt")
    assert "model.pt is a truncated archive" in verify_checkpoint(newest)


def test_no_complete_checkpoint_left_is_an_error_naming_each(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    assert resumable_checkpoint(ckpt_dir) is None
    for step in (2, 4):
        _truncate(_save(ckpt_dir, step, 1.0) / "model.pt")
    with pytest.raises(CorruptCheckpointError, match="no complete checkpoint left") as err:
        resumable_checkpoint(ckpt_dir, log=lambda msg: None)
    assert "step_000002" in str(err.value) and "step_000004" in str(err.value)
    (ckpt_dir / "latest.json").write_text('{"latest": ')
    with pytest.raises(CorruptCheckpointError, match="latest.json is unreadable"):
        resumable_checkpoint(ckpt_dir)


@pytest.mark.slow
def test_resume_falls_back_from_a_truncated_checkpoint_through_the_trainer(tiny_data, tmp_path):
    from tests.train_harness import TRAIN, base_overrides, env

    run_dir = tmp_path / "run"
    args = ["--config", "recipes/multitask.yaml", *base_overrides(*tiny_data, run_dir, steps=4),
            "loop.checkpoint_every=2", "faults.crash_at_step=4"]
    first = subprocess.run([sys.executable, TRAIN, *args], cwd=REPO, env=env(), capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 17, first.stderr[-3000:]  # crashed after step 4's update, before its save
    ckpts = run_dir / "finetune" / "checkpoints"
    assert read_pointer(ckpts)["history"] == ["step_000002"]
    # Make step 2 the previous checkpoint of a newer, corrupt one: copy it to step 3 and damage that.
    shutil.copytree(ckpts / "step_000002", ckpts / "step_000003")
    state = json.loads((ckpts / "step_000003" / "train_state.json").read_text())
    (ckpts / "step_000003" / "train_state.json").write_text(json.dumps({**state, "step": 3}))
    biggest = max((p for p in (ckpts / "step_000003").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    _truncate(biggest)
    (ckpts / "latest.json").write_text(json.dumps({"latest": "step_000003", "history": ["step_000002", "step_000003"]}))
    second = subprocess.run([sys.executable, TRAIN, *args], cwd=REPO, env=env(), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout
    assert f"checkpoint {ckpts / 'step_000003'} is corrupt" in out and biggest.name in out
    assert f"resumed from {ckpts / 'step_000002'} at step 2" in out
    assert json.loads((run_dir / "finetune" / "final.json").read_text())["steps"] == 4
