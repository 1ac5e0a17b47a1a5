"""Latency of collaborators: each collaborator's frames are ``d`` raw frames late while the ego stays at t.

A collaborator delayed by ``d`` raw frames (``d / raw_rate_hz`` seconds: 100 ms a frame at 10 Hz) shows the
ego its own history window ending at raw frame ``t - d`` (``t - d - (T-1-k) * history_stride`` at history
step k), with the poses of those frames, so the ego places it where it was when it sensed, as OpenCOOD's
``async`` setting does. Targets stay at t. A collaborator without a frame at ``t - d`` sends nothing (the
loader drops agents without a current frame).

Where the frames come from (``delay_sample``): a delay that is a multiple of ``history_stride`` shifts the
stored history by whole steps (the oldest steps become missing); any other delay ``d`` needs the delayed
frames of ``trainer.data.delayed_frames`` (shards converted with ``--delay-frames L``, ``L >= d``). A delay
the shards cannot give is a ``LatencyUnavailableError``, which ends the run (exit 2) rather than being skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from trainer.data.delayed_frames import DelayedFrames
from trainer.data.sample import Sample


class LatencyUnavailableError(RuntimeError):
    """The shards do not hold the frames a configured delay needs (never skipped: re-convert the data)."""


@dataclass(kw_only=True)
class LatencyConfig:
    """Delay of every collaborator's frames, in raw frames; the ego is never delayed. 0 and 0 = no latency."""

    min_frames: int = 0
    """Smallest delay (raw frames; 1 = 100 ms at 10 Hz)."""
    max_frames: int = 0
    """Largest delay; each collaborator of each sample draws its delay uniformly from [min_frames, max_frames]
    (a fixed delay when they are equal)."""
    seed: int = 0
    """Seed of the draws; with the sample key it fixes every collaborator's delay (see ``trainer.data.conditions``)."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_frames <= self.max_frames:
            raise ValueError(f"latency needs 0 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.seed < 0:
            raise ValueError(f"latency.seed must be >= 0, got {self.seed}")

    @property
    def enabled(self) -> bool:
        return self.max_frames > 0


def draw_delays(cfg: LatencyConfig, rng: np.random.Generator, num_agents: int) -> np.ndarray:
    """[A] int64 delays (raw frames) of a sample's agents; entry 0 (the ego) is 0."""
    delays = rng.integers(cfg.min_frames, cfg.max_frames + 1, size=num_agents).astype(np.int64)
    delays[0] = 0
    return delays


def _delayed_row(sample: Sample, delayed: DelayedFrames | None, agent: int, delay: int
                 ) -> tuple[np.ndarray, list[str | None], list[np.ndarray | None]]:
    """(poses [T, 6], keys [T], clouds [T]) of ``agent``'s window delayed by ``delay`` raw frames."""
    t_n = sample.frame_valid.shape[1]
    if delayed is not None and delay <= delayed.max_delay:
        keys = list(delayed.keys[delay - 1][agent])
        clouds = [None if k is None else delayed.clouds[k] for k in keys]
        return delayed.poses[delay - 1, agent], keys, clouds
    stride = int(sample.meta["history_stride"])
    if delay % stride:
        stored = delayed.max_delay if delayed is not None else 0
        raise LatencyUnavailableError(
            f"{sample.key}: a delay of {delay} raw frames needs shards converted with --delay-frames >= {delay} "
            f"(these store {stored}); delays that are multiples of the history stride ({stride}) need none")
    shift = delay // stride
    poses = np.full((t_n, 6), np.nan)
    keys: list[str | None] = [None] * t_n
    clouds: list[np.ndarray | None] = [None] * t_n
    for k in range(shift, t_n):
        if sample.frame_valid[agent, k - shift]:
            poses[k] = sample.poses[agent, k - shift]
            keys[k] = sample.frame_keys[agent][k - shift]
            clouds[k] = sample.agent_points(agent, k - shift)
    return poses, keys, clouds


def delay_sample(sample: Sample, delayed: DelayedFrames | None, delays: np.ndarray) -> Sample:
    """``sample`` with agent a's frames (poses, validity, points, keys) delayed by ``delays[a]`` raw frames
    (``[A]`` int, ``delays[0]`` must be 0: the ego stays at t). Targets and meta are unchanged.

    Raises ``LatencyUnavailableError`` when neither the history nor ``delayed`` holds a needed window.
    """
    delays = np.asarray(delays, dtype=np.int64)
    if delays.shape != sample.frame_valid.shape[:1] or delays[0] != 0 or (delays < 0).any():
        raise ValueError(f"delays must be [A] non-negative with the ego's 0, got {delays.tolist()}")
    if not delays.any():
        return sample
    poses, keys = sample.poses.copy(), [list(row) for row in sample.frame_keys]
    clouds = [[sample.agent_points(a, k) if sample.frame_valid[a, k] else None for k in range(len(keys[a]))]
              for a in range(len(keys))]
    for a in np.flatnonzero(delays):
        poses[a], keys[a], clouds[a] = _delayed_row(sample, delayed, int(a), int(delays[a]))
    valid = np.array([[k is not None for k in row] for row in keys], dtype=bool)
    counts = np.array([[0 if c is None else len(c) for c in row] for row in clouds], dtype=np.int64)
    present = [c for row in clouds for c in row if c is not None]
    points = np.concatenate(present) if present else np.zeros((0, 4), np.float32)
    return replace(sample, poses=poses, frame_valid=valid, frame_keys=keys, points=points, point_counts=counts)
