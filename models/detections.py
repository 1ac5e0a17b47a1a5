"""Decoded model outputs for one scene: what evaluation and visualisation consume."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class SceneDetections:
    """Scored oriented boxes and their predicted trajectories, in the ego BEV frame now."""

    boxes: Tensor
    """[N, 7] float32 (x, y, z, l, w, h, yaw), full sizes, radians."""
    scores: Tensor
    """[N] float32 detection confidence in [0, 1]."""
    labels: Tensor
    """[N] int64 training class index."""
    trajectories: Tensor
    """[N, K, T_f, 2] float32 future (x, y) per mode, absolute in the ego BEV frame now."""
    mode_scores: Tensor
    """[N, K] float32 mode probabilities (sum to 1 over K)."""
