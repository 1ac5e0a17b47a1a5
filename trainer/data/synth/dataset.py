"""The built-in synthetic dataset: generated once (rank 0), converted to shards, cached by its spec
and the shard schema version (a cache of another version is regenerated next to it, never read)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from trainer.data.config import ConvertConfig
from trainer.data.sample import SCHEMA_VERSION

if TYPE_CHECKING:
    from trainer.data.convert import ConvertSummary

SPLITS = ("train", "val")
"""The splits of the built-in dataset."""


@dataclass(kw_only=True)
class SyntheticDataConfig:
    """What the embedded default dataset contains (used when no shards are given)."""

    enabled: bool = True
    """With empty data.train_shards / data.val_shards, generate and use the synthetic dataset."""
    cache_dir: str = ""
    """Cache folder (empty: ``$TURBOTRAIN_CACHE`` or ``~/.cache/turbotrain``)."""
    seed: int = 0
    """Generator seed of the train split (val uses seed + 1000, so the splits never share a scenario)."""
    train_scenarios: int = 24
    """Training scenarios (12 samples each at the default frames and stride; about 8 MB of shards each)."""
    val_scenarios: int = 4
    """Held-out validation scenarios."""
    frames: int = 80
    """Frames per scenario at 10 Hz."""
    sample_stride: int = 5
    """Raw frames between consecutive samples of one ego."""
    delay_frames: int = 0
    """Also store the collaborators' frames delayed by 1..delay_frames raw frames, so that latency of that many
    frames can be trained and evaluated (``trainer.data.delayed_frames``; 3 makes the shards 3.6 times as
    large). 0 = none."""

    def __post_init__(self) -> None:
        if self.train_scenarios < 1 or self.val_scenarios < 1:
            raise ValueError("synthetic.train_scenarios and synthetic.val_scenarios must be >= 1")
        if self.frames < 60:
            raise ValueError(f"synthetic.frames must be >= 60 (5 history + 6 future steps at 2 Hz), got {self.frames}")
        if self.sample_stride < 1 or self.seed < 0 or self.delay_frames < 0:
            raise ValueError("synthetic.sample_stride must be >= 1, synthetic.seed and synthetic.delay_frames >= 0")

    def root(self) -> Path:
        base = self.cache_dir or os.environ.get("TURBOTRAIN_CACHE") or str(Path.home() / ".cache" / "turbotrain")
        spec = {k: v for k, v in asdict(self).items() if k not in ("enabled", "cache_dir")}
        if not self.delay_frames:  # datasets without delayed frames keep the cache folder they had before it existed
            del spec["delay_frames"]
        spec["schema_version"] = SCHEMA_VERSION  # schema-v1 caches were keyed by the spec alone
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
        return Path(base) / f"synthetic-{digest}"


def shard_patterns(root: Path) -> tuple[str, str]:
    """Comma-separated train and val shard lists of a prepared dataset."""
    return tuple(",".join(str(p) for p in sorted((root / "shards").glob(f"{split}-*.tar")))  # type: ignore[return-value]
                 for split in ("train", "val"))


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the block: jobs that share a
    cache, started together, generate a dataset once instead of writing into each other's files."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_synthetic(cfg: SyntheticDataConfig, *, max_agents: int, history: int,
                      log: Callable[[str], None] = print) -> Path:
    """Generate + convert the dataset unless the cache already holds it; returns its root.

    A second job asking for the same dataset while the first generates it waits for it, then uses it."""
    root = cfg.root()
    if (root / "COMPLETE").exists():
        return root
    with exclusive(root.with_name(root.name + ".lock")):
        if not (root / "COMPLETE").exists():
            _generate(cfg, root, max_agents=max_agents, history=history, log=log)
    return root


def generate_split(cfg: SyntheticDataConfig, split: str, out: Path, *, max_agents: int, history: int) -> ConvertSummary:
    """Generate and convert one split (``train``: seed ``cfg.seed``; ``val``: seed ``cfg.seed + 1000``) into
    ``out/shards/<split>-%06d.tar``; the raw scenes under ``out/raw/<split>`` are deleted afterwards (the shards
    hold everything training reads; the raw scenes are 60% of the disk)."""
    from trainer.data.convert import convert
    from trainer.data.synth import SynthConfig, generate_dataset

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    seed, count = (cfg.seed, cfg.train_scenarios) if split == "train" else (cfg.seed + 1000, cfg.val_scenarios)
    raw = out / "raw" / split
    generate_dataset(SynthConfig(seed=seed, num_scenarios=count, num_frames=cfg.frames), raw, progress=False,
                     workers=os.cpu_count() or 1)
    summary = convert(raw, str(out / "shards" / f"{split}-%06d.tar"),
                      ConvertConfig(max_agents=max_agents, history=history, sample_stride=cfg.sample_stride,
                                    delay_frames=cfg.delay_frames),
                      maxcount=64, progress=False)
    shutil.rmtree(raw)
    return summary


def _generate(cfg: SyntheticDataConfig, root: Path, *, max_agents: int, history: int,
              log: Callable[[str], None]) -> None:
    log(f"generating the synthetic V2X dataset into {root} (once; cached afterwards)")
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in SPLITS:
        summary = generate_split(cfg, split, tmp, max_agents=max_agents, history=history)
        log(f"  {split}: {summary.samples} samples in {len(summary.shards)} shards"
            + (f", {summary.skipped_samples} skipped" if summary.skipped_samples else ""))
    shutil.rmtree(tmp / "raw", ignore_errors=True)
    (tmp / "COMPLETE").write_text(json.dumps(asdict(cfg)))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
