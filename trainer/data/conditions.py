"""Real-world sensing conditions applied to decoded samples before preparation: latency, then pose noise.

Both are drawn per sample from generators seeded by the condition's own seed, the sample key and the
loader's stream parts (``stream``): an evaluation passes none, so every evaluation of a sample sees the same
errors and delays however the samples are spread over processes and workers; training passes its seed and
epoch, so each epoch draws new ones. The ego is never delayed or perturbed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from trainer.data.delayed_frames import decode_delayed
from trainer.data.latency import LatencyConfig, delay_sample, draw_delays
from trainer.data.pose_noise import PoseNoiseConfig, draw_pose_noise, perturb_poses
from trainer.data.sample import Sample
from trainer.data.split import make_seed


@dataclass(frozen=True, kw_only=True)
class Conditions:
    """The pose noise and latency one loader applies (the training augmentation's, or the evaluation's)."""

    pose_noise: PoseNoiseConfig = field(default_factory=PoseNoiseConfig)
    """Collaborators' pose errors."""
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    """Collaborators' delays."""

    @property
    def enabled(self) -> bool:
        return self.pose_noise.enabled or self.latency.enabled


class ConditionSampler:
    """Applies ``conditions`` to each decoded sample (one instance per loader worker)."""

    def __init__(self, conditions: Conditions, *, stream: tuple[int | str, ...] = ()) -> None:
        self.conditions = conditions
        self.stream = stream

    def _rng(self, what: str, seed: int, key: str) -> np.random.Generator:
        return np.random.default_rng(make_seed(what, seed, *self.stream, key))

    def __call__(self, sample: Sample, record: Mapping) -> Sample:
        """``sample`` (decoded from ``record``, whose delayed frames a latency may need) under the conditions."""
        latency, noise = self.conditions.latency, self.conditions.pose_noise
        agents, history = sample.frame_valid.shape
        if latency.enabled:
            delays = draw_delays(latency, self._rng("latency", latency.seed, sample.key), agents)
            if delays.any():
                delayed = decode_delayed(record, agents=agents, history=history)
                sample = delay_sample(sample, delayed, delays)
        if noise.enabled:
            errors = draw_pose_noise(noise, self._rng("pose_noise", noise.seed, sample.key), agents)
            sample = replace(sample, poses=perturb_poses(sample.poses, errors))
        return sample
