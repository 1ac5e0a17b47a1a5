"""Localisation error of collaborators: Gaussian x / y / z and yaw errors on the pose each collaborator sends.

As in OpenCOOD's ``wild_setting`` (``xyz_std``, ``ryp_std``), every collaborator of a sample draws one error
``(dx, dy, dz, dyaw)`` and the ego receives its pose at the current time as ``pose + error``: world metres for
x, y, z and degrees for yaw (roll and pitch stay exact). The ego's own pose is never perturbed. A
collaborator's history is aligned by its own odometry, which the error does not touch: all its frames move
with the same rigid correction, so its frame-to-frame motion (``history_to_now``) is unchanged and only where
the ego places the collaborator (``agent_to_ego``, and the collaborator's height above the ego) is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOISE_SIZE = 4
"""One collaborator's error: (dx, dy, dz) world metres and dyaw degrees."""


@dataclass(kw_only=True)
class PoseNoiseConfig:
    """Gaussian errors on collaborators' poses (the ego stays exact); all zero = no noise."""

    xy_std_m: float = 0.0
    """Standard deviation of the x and y error (metres, world frame), each drawn independently."""
    z_std_m: float = 0.0
    """Standard deviation of the height error (metres)."""
    yaw_std_deg: float = 0.0
    """Standard deviation of the yaw error (degrees)."""
    seed: int = 0
    """Seed of the draws; with the sample key it fixes every collaborator's error (see ``trainer.data.conditions``)."""

    def __post_init__(self) -> None:
        for name in ("xy_std_m", "z_std_m", "yaw_std_deg"):
            value = getattr(self, name)
            if not 0.0 <= value < float("inf"):
                raise ValueError(f"pose_noise.{name} must be a finite value >= 0, got {value}")
        if self.seed < 0:
            raise ValueError(f"pose_noise.seed must be >= 0, got {self.seed}")

    @property
    def enabled(self) -> bool:
        return self.xy_std_m > 0 or self.z_std_m > 0 or self.yaw_std_deg > 0


def draw_pose_noise(cfg: PoseNoiseConfig, rng: np.random.Generator, num_agents: int) -> np.ndarray:
    """[A, 4] errors (dx, dy, dz, dyaw_deg) for a sample's ``num_agents`` agents; row 0 (the ego) is zero.

    The four standard normals of every collaborator are drawn whatever the deviations, so a collaborator's
    error scales linearly with the configured deviations for one seed.
    """
    unit = rng.standard_normal((num_agents, NOISE_SIZE))
    noise = unit * np.array([cfg.xy_std_m, cfg.xy_std_m, cfg.z_std_m, cfg.yaw_std_deg])
    noise[0] = 0.0
    return noise


def perturb_poses(poses: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Agents' poses ``[A, T, 6]`` (OpenCOOD ``x, y, z, roll, yaw, pitch``, degrees; NaN for a missing frame)
    with agent a's pose at the current time (index T-1) replaced by ``pose + noise[a]`` (``[A, 4]``) and its
    other frames moved by the same rigid correction (about the current position, in the world):

        xy_k' = xy_t + d_xy + R(dyaw) (xy_k - xy_t),  yaw_k' = yaw_k + dyaw,  z_k' = z_k + dz.

    Relative poses between an agent's own frames are therefore unchanged. Agents without a current frame
    are returned unchanged (the loader drops them).
    """
    poses = np.asarray(poses, dtype=np.float64)
    out = poses.copy()
    now = poses[:, -1]  # [A, 6]
    moved = np.isfinite(now).all(axis=1) & np.any(noise != 0, axis=1)
    for a in np.flatnonzero(moved):
        dx, dy, dz, dyaw = noise[a]
        c, s = np.cos(np.radians(dyaw)), np.sin(np.radians(dyaw))
        rel = poses[a, :, :2] - now[a, :2]  # [T, 2]
        out[a, :, 0] = now[a, 0] + dx + c * rel[:, 0] - s * rel[:, 1]
        out[a, :, 1] = now[a, 1] + dy + s * rel[:, 0] + c * rel[:, 1]
        out[a, :, 2] = poses[a, :, 2] + dz
        out[a, :, 4] = poses[a, :, 4] + dyaw
    return out
