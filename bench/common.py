"""Shared helpers of the benchmark scripts: launching ``launch/train.py``, provenance, robust statistics."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "launch" / "train.py"
RESULTS_DIR = REPO / "docs" / "results"


def bench_env(*, threads: int = 1, **extra: str) -> dict[str, str]:
    """Environment of a benchmark subprocess: CPU DeepSpeed accelerator, fixed thread count, repo on the path."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
    if not _cuda_available():
        env["DS_ACCELERATOR"] = "cpu"
    env.update(extra)
    return env


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def free_port() -> int:
    """A currently free TCP port on localhost (for a process-group rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(config: str, overrides: Sequence[str], *, nprocs: int = 1, torchrun: bool = False) -> list[str]:
    """``launch/train.py`` as plain python (one process) or under ``torchrun`` (``nprocs`` > 1, or ``torchrun``)."""
    args = ["--config", config, *overrides]
    if nprocs == 1 and not torchrun:
        return [sys.executable, str(TRAIN), *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nprocs), "--master_port",
            str(free_port()), str(TRAIN), *args]


EXIT_PREEMPTED = 75


def run_train(config: str, overrides: Sequence[str], *, log_path: Path, nprocs: int = 1, threads: int = 1,
              timeout: float | None = None, max_resumes: int = 3, torchrun: bool = False) -> int:
    """Run one training job to completion, its stdout + stderr appended to ``log_path``.

    A job stopped by a signal (exit 75: checkpoint saved) is started again with the same command, which resumes
    it (``run.resume=auto``), at most ``max_resumes`` times. Returns the number of resumes. Raises RuntimeError
    with the log's tail when the job exits with any other non-zero code.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    for resumes in range(max_resumes + 1):
        with log_path.open("a") as log:
            proc = subprocess.run(train_command(config, overrides, nprocs=nprocs, torchrun=torchrun), cwd=REPO,
                                  env=bench_env(threads=threads), stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        if proc.returncode != EXIT_PREEMPTED:
            break
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        raise RuntimeError(f"training exited with {proc.returncode} (log: {log_path}):\n{tail}")
    return resumes


def machine_info() -> dict[str, Any]:
    """Where a benchmark ran: CPU model, core count, GPU (if any), library versions, git revision."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                            "torch": torch.__version__, "gpu": None, "git": git_revision()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import deepspeed

        info["deepspeed"] = deepspeed.__version__
    except ImportError:
        pass
    return info


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def median_and_spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of a non-empty sequence."""
    if not values:
        raise ValueError("median_and_spread needs at least one value")
    return statistics.median(values), min(values), max(values)


def write_result(out: Path, name: str, *, command: str, checkpoint: str, table: str, **fields: Any) -> None:
    """A checkpoint diagnostic's results into ``out``: ``<name>.json`` (the command, the checkpoint, the machine and
    ``fields``) and ``<name>.md`` (the command and ``table``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(
        {"command": command, "checkpoint": checkpoint, **fields, "machine": machine_info()}, indent=1))
    (out / f"{name}.md").write_text(f"Command: `{command}` (checkpoint {checkpoint})\n\n{table}\n")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed with 3 significant decimals."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
