"""Pure motion models of the synthetic traffic: bicycle model, pure pursuit, IDM, paths."""

import numpy as np
import pytest

from trainer.data.synth.kinematics import bicycle_step, idm_accel, pure_pursuit_steer
from trainer.data.synth.paths import Polyline, bezier_turn


def _limits(n=1, max_speed=20.0, max_accel=3.0, max_brake=6.0, max_steer_deg=30.0):
    return dict(max_speed=np.full(n, max_speed), max_accel=np.full(n, max_accel), max_brake=np.full(n, max_brake),
                max_steer=np.full(n, np.radians(max_steer_deg)))


def _drive(steps, speed, accel, steer, wheelbase=2.7, dt=0.1, **kw):
    x = y = yaw = np.zeros(1)
    v = np.full(1, speed)
    for _ in range(steps):
        x, y, yaw, v = bicycle_step(x, y, yaw, v, np.full(1, accel), np.full(1, steer), np.full(1, wheelbase), dt,
                                    **_limits(**kw))
    return x[0], y[0], yaw[0], v[0]


def test_straight_drive_covers_speed_times_time():
    x, y, yaw, v = _drive(10, speed=10.0, accel=0.0, steer=0.0)
    assert x == pytest.approx(10.0) and y == pytest.approx(0.0) and yaw == pytest.approx(0.0) and v == 10.0


def test_left_steer_turns_left_with_bicycle_yaw_rate():
    steer = np.radians(10.0)
    x, y, yaw, _ = _drive(1, speed=5.0, accel=0.0, steer=steer, dt=0.1)
    assert yaw == pytest.approx(5.0 / 2.7 * np.tan(steer) * 0.1)
    _, y, yaw, _ = _drive(30, speed=5.0, accel=0.0, steer=steer)
    assert yaw > 0.5 and y > 1.0


def test_steering_acceleration_and_speed_are_clipped():
    _, _, yaw_big, v = _drive(1, speed=5.0, accel=100.0, steer=1.4, max_steer_deg=30.0, max_accel=3.0)
    _, _, yaw_max, _ = _drive(1, speed=5.0, accel=3.0, steer=np.radians(30.0))
    assert yaw_big == pytest.approx(yaw_max)
    assert v == pytest.approx(5.0 + 0.3)
    _, _, _, v = _drive(100, speed=5.0, accel=3.0, steer=0.0, max_speed=8.0)
    assert v == pytest.approx(8.0)


def test_braking_stops_without_reversing():
    x_stop, _, _, v = _drive(40, speed=12.0, accel=-100.0, steer=0.0, max_brake=6.0)
    assert v == 0.0
    assert x_stop == pytest.approx(12.0**2 / (2 * 6.0), rel=0.05)
    x_later, *_ = _drive(60, speed=12.0, accel=-100.0, steer=0.0, max_brake=6.0)
    assert x_later == pytest.approx(x_stop)


def test_pure_pursuit_steers_towards_target_side():
    wheelbase = np.array([2.7])
    left = pure_pursuit_steer(np.zeros(1), np.zeros(1), np.zeros(1), np.array([10.0]), np.array([2.0]), wheelbase)
    right = pure_pursuit_steer(np.zeros(1), np.zeros(1), np.zeros(1), np.array([10.0]), np.array([-2.0]), wheelbase)
    ahead = pure_pursuit_steer(np.zeros(1), np.zeros(1), np.zeros(1), np.array([10.0]), np.array([0.0]), wheelbase)
    assert left[0] > 0 > right[0] and ahead[0] == pytest.approx(0.0)


def test_idm_free_road_accelerates_and_close_leader_brakes():
    kw = dict(max_accel=np.array(2.0), comfort_brake=np.array(3.0))
    free = idm_accel(np.array([5.0]), np.array([12.0]), np.array([np.inf]), np.array([0.0]), **kw)
    at_speed = idm_accel(np.array([12.0]), np.array([12.0]), np.array([np.inf]), np.array([0.0]), **kw)
    close = idm_accel(np.array([10.0]), np.array([12.0]), np.array([5.0]), np.array([10.0]), **kw)
    assert free[0] > 1.5 and at_speed[0] == pytest.approx(0.0, abs=1e-9) and close[0] < -3.0


def test_polyline_arc_length_projection_and_turn_heading():
    path = Polyline(np.concatenate([[[-20.0, 0.0]], bezier_turn([0, 0], [1, 0], [10, 10], [0, 1]), [[10.0, 30.0]]]))
    assert path.heading_at(1.0) == pytest.approx(0.0, abs=1e-6)
    assert path.heading_at(path.length - 1.0) == pytest.approx(np.pi / 2, abs=1e-6)
    s = path.project(np.array([-5.0, 0.3]), s_hint=10.0)
    assert s == pytest.approx(15.0, abs=0.5)
    with pytest.raises(ValueError, match="Polyline"):
        Polyline(np.zeros((1, 2)))
