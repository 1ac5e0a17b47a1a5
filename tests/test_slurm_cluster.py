"""launch/slurm/*.sbatch on a real 2-node Slurm cluster (../shared/tools/slurm-fixture.sh, CPU, gloo).

One uninterrupted 2-node job of train.sbatch (Accelerate) is the reference; a second identical job gets
``scancel --signal=USR1`` mid-run, must checkpoint, exit 75, requeue itself through the sbatch script,
resume in the requeued run and log the same fp32 losses as the reference after the preemption step.
train_deepspeed.sbatch (DeepSpeed's launcher with a hostfile written from the allocation) must train
the same job across both nodes to the same losses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.train_harness import REPO, base_overrides

FIXTURE = Path(os.environ.get("TURBOTRAIN_SLURM_FIXTURE", REPO.parent / "shared" / "tools" / "slurm-fixture.sh"))
SLURM_CONF = "/tmp/slurm-fixture/slurm.conf"
STEPS = 6

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def _missing_requirement() -> str | None:
    if os.geteuid() != 0:
        return "the Slurm fixture needs root (it creates network namespaces and runs slurmd)"
    for tool in ("sinfo", "slurmctld", "slurmd", "munged"):
        if shutil.which(tool) is None:
            return f"{tool} not found: apt-get install -y slurm-wlm munge"
    if not FIXTURE.is_file():
        return f"Slurm fixture script not found at {FIXTURE} (set TURBOTRAIN_SLURM_FIXTURE)"
    return None


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """Environment for sbatch/scontrol against the fixture cluster, which is up for the session."""
    reason = _missing_requirement()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "SLURM_CONF": SLURM_CONF}
    up = subprocess.run(["bash", str(FIXTURE), "up"], env=env, capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        pytest.fail(f"slurm-fixture.sh up failed:\n{up.stdout}\n{up.stderr}")
    yield env
    subprocess.run(["bash", str(FIXTURE), "down"], env=env, capture_output=True, text=True, timeout=120)


def _job(env: dict[str, str], job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _node_states(env: dict[str, str]) -> set[str]:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True).stdout
    return set(out.split())


def _wait(predicate, what: str, timeout: float = 240.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _submit(env: dict[str, str], tiny_data: tuple[str, str], run_dir: Path, log: Path,
            script: str = "train.sbatch") -> str:
    train, val = tiny_data
    job_env = ",".join(["ALL", f"TURBOTRAIN_ROOT={REPO}", f"RUN_DIR={run_dir}", "MIXED_PRECISION=no",
                        "OMP_NUM_THREADS=1", "DS_ACCELERATOR=cpu"])
    args = ["--config", "recipes/multitask.yaml", *base_overrides(train, val, run_dir, steps=STEPS),
            "loop.checkpoint_every=2"]
    out = subprocess.run(["sbatch", "--parsable", f"--chdir={REPO}", f"--output={log}", f"--export={job_env}",
                          str(REPO / "launch" / "slurm" / script), *args],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


def _wait_done(env: dict[str, str], job: str, log: Path) -> dict[str, str]:
    info = _wait(lambda: (lambda j: j if j.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
                          else None)(_job(env, job)), f"job {job} to end")
    assert info["JobState"] == "COMPLETED", f"job {job}: {info.get('JobState')} {info.get('Reason')}\n" \
                                            f"{log.read_text()[-4000:]}"
    return info


def _losses(run_dir: Path) -> dict[int, float]:
    """loss/total per step (the last record wins: a step logged twice around a preemption)."""
    out: dict[int, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss/total" in record:
            out[record["step"]] = record["loss/total"]
    return out


@pytest.fixture(scope="module")
def reference_run(slurm_env, tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """(run dir, log) of an uninterrupted 2-node job."""
    root = tmp_path_factory.mktemp("slurm-reference")
    run_dir, log = root / "run", root / "job.out"
    job = _submit(slurm_env, tiny_data, run_dir, log)
    _wait_done(slurm_env, job, log)
    return run_dir, log


def test_two_node_job_trains_across_both_nodes_and_checkpoints(reference_run):
    run_dir, log = reference_run
    text = log.read_text()
    assert "2 nodes (n[1-2])" in text and "processes: 2" in text, text[-3000:]
    assert sorted(_losses(run_dir)) == list(range(1, STEPS + 1))
    pointer = json.loads((run_dir / "finetune" / "checkpoints" / "latest.json").read_text())
    assert pointer["latest"] == f"step_{STEPS:06d}"
    assert (run_dir / "finetune" / "checkpoints" / pointer["latest"] / "train_state.json").is_file()
    assert (run_dir / "finetune" / "final.json").is_file()


def test_usr1_preemption_saves_requeues_and_resumes_exactly(slurm_env, tiny_data, reference_run, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "job.out"
    job = _submit(slurm_env, tiny_data, run_dir, log)
    _wait(lambda: (run_dir / "metrics.jsonl").exists() and 2 in _losses(run_dir), "step 2 in metrics.jsonl")
    subprocess.run(["scancel", "--signal=USR1", job], env=slurm_env, check=True)
    _wait(lambda: _job(slurm_env, job).get("Restarts") == "1" and _job(slurm_env, job).get("JobState") == "PENDING",
          "the sbatch script to requeue the job")
    # Slurm holds a requeued job for a while (BeginTime) and refuses to start it in the same second its
    # old credential was revoked; wait for both nodes to be idle, then release it.
    _wait(lambda: _node_states(slurm_env) == {"idle"}, "both nodes to be idle")
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurm_env, check=True)
    _wait_done(slurm_env, job, log)

    text = log.read_text()
    saved = re.search(r"checkpoint saved at step (\d+)", text)
    assert saved, text[-4000:]
    stop_step = int(saved.group(1))
    assert 2 <= stop_step < STEPS
    assert "exit 75 (requeue)" in text and "requeueing job" in text
    assert f"resumed from {run_dir / 'finetune' / 'checkpoints' / f'step_{stop_step:06d}'}" in text
    reference, resumed = _losses(reference_run[0]), _losses(run_dir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(stop_step + 1, STEPS + 1):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-6, rel=0), f"step {step}"


def test_deepspeed_hostfile_job_trains_across_both_nodes_like_accelerate(slurm_env, tiny_data, reference_run,
                                                                         tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "job.out"
    job = _submit(slurm_env, tiny_data, run_dir, log, script="train_deepspeed.sbatch")
    _wait_done(slurm_env, job, log)
    text = log.read_text()
    assert "processes: 2" in text, text[-3000:]
    hosts = (run_dir / "hostfile").read_text().split("\n")
    assert [h for h in hosts if h] == ["n1 slots=1", "n2 slots=1"]
    reference, losses = _losses(reference_run[0]), _losses(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert losses == pytest.approx(reference, abs=1e-6, rel=0)
    pointer = json.loads((run_dir / "finetune" / "checkpoints" / "latest.json").read_text())
    assert pointer["latest"] == f"step_{STEPS:06d}"
