"""metrics.jsonl: one JSON object per logged step, written by the main process only."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends records to ``<run>/metrics.jsonl`` (no-op on non-main ranks).

    Every record gets ``time``: wall-clock seconds since this process started the run (a resumed
    process starts counting again from 0).
    """

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.start = time.perf_counter()

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {**record, "time": round(time.perf_counter() - self.start, 3)}
        with self.path.open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def drop_after(self, stage: str, step: int) -> int:
        """Before a resume from ``step`` of ``stage``: :func:`drop_records_after` on this log (main process
        only; 0 elsewhere)."""
        return drop_records_after(self.path, stage=stage, step=step) if self.enabled else 0


def _kept(line: str, stage: str, step: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    if not isinstance(record, dict) or record.get("stage") != stage:
        return True
    at = record.get("step")
    return not isinstance(at, (int, float)) or isinstance(at, bool) or at <= step


def drop_records_after(path: Path, *, stage: str, step: int) -> int:
    """Rewrite ``path`` atomically (a temporary file renamed over it) without the records of ``stage`` whose
    step is greater than ``step``: those a killed attempt logged after the checkpoint a resume restarts from,
    which the resumed run logs again. Records of other stages, records at or below ``step`` and records
    without a numeric step are kept as they are; a line that is not JSON (a torn last line) is dropped.
    Returns the number of lines dropped; the file is left untouched (and may be absent) when that is 0."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if _kept(line, stage, step)]
    if len(kept) == len(lines):
        return 0
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write("".join(line + "\n" for line in kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(lines) - len(kept)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
