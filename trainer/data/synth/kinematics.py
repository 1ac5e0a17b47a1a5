"""Pure, vectorised motion models: kinematic bicycle, pure-pursuit steering, IDM car following."""

from __future__ import annotations

import numpy as np

from trainer.data.synth.geometry import wrap_angle


def bicycle_step(x: np.ndarray, y: np.ndarray, yaw: np.ndarray, speed: np.ndarray, accel: np.ndarray,
                 steer: np.ndarray, wheelbase: np.ndarray, dt: float, *, max_speed: np.ndarray,
                 max_accel: np.ndarray, max_brake: np.ndarray, max_steer: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One explicit step of the kinematic bicycle model (reference point: rear axle), all inputs [N].

    Acceleration is clipped to [-max_brake, max_accel], steering to [-max_steer, max_steer] (radians),
    speed to [0, max_speed] (no reversing). The yaw rate is ``v / wheelbase * tan(steer)``.
    Returns the new (x, y, yaw, speed).
    """
    accel = np.clip(accel, -max_brake, max_accel)
    steer = np.clip(steer, -max_steer, max_steer)
    new_speed = np.clip(speed + accel * dt, 0.0, max_speed)
    mean_speed = 0.5 * (speed + new_speed)
    yaw_rate = mean_speed / wheelbase * np.tan(steer)
    mid_yaw = yaw + 0.5 * yaw_rate * dt
    new_x = x + mean_speed * np.cos(mid_yaw) * dt
    new_y = y + mean_speed * np.sin(mid_yaw) * dt
    return new_x, new_y, wrap_angle(yaw + yaw_rate * dt), new_speed


def pure_pursuit_steer(x: np.ndarray, y: np.ndarray, yaw: np.ndarray, target_x: np.ndarray,
                       target_y: np.ndarray, wheelbase: np.ndarray) -> np.ndarray:
    """Steering angle [N] (radians) that puts the rear axle on an arc through the target point."""
    dx, dy = target_x - x, target_y - y
    alpha = wrap_angle(np.arctan2(dy, dx) - yaw)
    lookahead = np.maximum(np.hypot(dx, dy), 1e-3)
    return np.arctan2(2.0 * wheelbase * np.sin(alpha), lookahead)


def idm_accel(speed: np.ndarray, desired_speed: np.ndarray, gap: np.ndarray, closing_speed: np.ndarray, *,
              max_accel: np.ndarray, comfort_brake: np.ndarray, min_gap: float = 2.0,
              headway: float = 1.2) -> np.ndarray:
    """Intelligent Driver Model acceleration [N].

    ``gap`` is the bumper-to-bumper distance to the obstacle ahead (``inf`` for a free road) and
    ``closing_speed`` = own speed - obstacle speed along the path.
    """
    desired_gap = min_gap + np.maximum(0.0, speed * headway + speed * closing_speed
                                       / (2.0 * np.sqrt(max_accel * comfort_brake)))
    free = 1.0 - (speed / np.maximum(desired_speed, 0.1)) ** 4
    interaction = (desired_gap / np.maximum(gap, 0.1)) ** 2
    return max_accel * (free - np.where(np.isfinite(gap), interaction, 0.0))
