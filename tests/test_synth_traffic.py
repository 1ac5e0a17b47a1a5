"""Synthetic traffic behaviours: signals, stops, turns, recycling; and the world layouts."""

import dataclasses

import numpy as np
import pytest

from trainer.data.synth.classes import CLASS_SPECS, OBJ_TYPES
from trainer.data.synth.config import TrafficConfig
from trainer.data.synth.geometry import wrap_angle
from trainer.data.synth.traffic import Traffic
from trainer.data.synth.world import SignalPlan, build_world

ALWAYS_RED = SignalPlan(num_groups=5, green_s=1.0, clearance_s=20.0, offset_s=90.0)
"""Groups 0-3 (the real arms) stay red for the first 14 s."""
NOBODY = TrafficConfig(num_vehicles=0, num_cyclists=0, num_pedestrians=0, num_barriers=0)


def _green_for(group: int) -> SignalPlan:
    """A plan under which ``group`` is green for the first 100 s."""
    return SignalPlan(num_groups=4, green_s=100.0, clearance_s=0.0, offset_s=group * 100.0)


def _lone_cav(seed: int, signals: SignalPlan) -> Traffic:
    rng = np.random.default_rng(seed)
    world = dataclasses.replace(build_world("intersection", rng), signals=signals)
    return Traffic(world, NOBODY, num_cavs=1, rng=rng)


def _run(traffic: Traffic, seconds: float, dt: float = 0.1) -> None:
    for k in range(int(round(seconds / dt))):
        traffic.step(k * dt, dt)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vehicle_stops_at_red_stop_line_and_passes_on_green(seed):
    red = _lone_cav(seed, ALWAYS_RED)
    [cav] = red.actors
    assert cav.s < cav.route.stop_s
    _run(red, 14.0)
    assert cav.speed < 0.05
    front = cav.s + cav.size[0] / 2
    assert cav.route.stop_s - 4.0 < front <= cav.route.stop_s + 0.3
    green = _lone_cav(seed, ALWAYS_RED)
    group = green.actors[0].route.signal_group
    green.world = dataclasses.replace(green.world, signals=_green_for(group))
    _run(green, 14.0)
    assert green.actors[0].s > green.actors[0].route.stop_s + 20.0 and green.actors[0].speed > 3.0


def test_turning_route_changes_heading_by_a_quarter_turn():
    rng = np.random.default_rng(0)
    world = build_world("intersection", rng)
    turns = [r for r in world.vehicle_routes if abs(wrap_angle(r.path.heading[-1] - r.path.heading[0])) > 1.0]
    world = dataclasses.replace(world, signals=_green_for(turns[0].signal_group))
    assert len(turns) == 8  # one left and one right turn per arm
    traffic = Traffic(world, NOBODY, num_cavs=0, rng=rng)
    traffic.actors.append(traffic._make("car", turns[0].path, turns[0], 160.0, *turns[0].path.position(160.0),
                                        turns[0].path.heading_at(160.0), 8.0, 8.0))
    start_yaw = traffic.actors[0].yaw
    _run(traffic, 8.0)
    car = traffic.actors[0]
    assert abs(abs(wrap_angle(car.yaw - start_yaw)) - np.pi / 2) < 0.1
    s_now = car.path.project(np.array([car.x, car.y]), car.s)
    lateral = np.hypot(*(car.path.position(s_now) - [car.x, car.y]))
    assert lateral < 0.3  # pure pursuit keeps the car on its lane


def test_traffic_population_types_sizes_and_recycling():
    rng = np.random.default_rng(3)
    world = build_world("corridor", rng)
    traffic = Traffic(world, TrafficConfig(num_vehicles=10, num_cyclists=3, num_pedestrians=6, num_barriers=2), 2, rng)
    cavs = traffic.cav_ids
    assert cavs == [1, 2]
    first = traffic.snapshot()
    assert set(first.types) <= set(OBJ_TYPES) and first.types.count("barrier") == 2
    for name, (_, _, _, length, width, height, _) in zip(first.types, first.boxes):
        spec = CLASS_SPECS[name]
        assert spec.length[0] <= length <= spec.length[1] and spec.width[0] <= width <= spec.width[1]
    _run(traffic, 25.0)
    last = traffic.snapshot()
    assert set(cavs) <= set(last.ids.tolist())
    assert set(first.ids.tolist()) != set(last.ids.tolist())  # some left the map, newcomers got fresh ids
    assert last.ids.max() > first.ids.max() and len(set(last.ids.tolist())) == len(last.ids)
    assert (last.speeds >= 0).all() and (last.speeds <= 20.0).all()


def test_worlds_have_occluders_routes_and_raised_infra_mounts():
    for layout in ("intersection", "corridor"):
        world = build_world(layout, np.random.default_rng(0))
        assert len(world.occluders) >= 8 and (world.occluders[:, 5] > 2.0).all()
        assert np.allclose(world.occluders[:, 2], world.occluders[:, 5] / 2)  # boxes stand on the ground
        assert world.infra_mounts.shape == (4, 3) and len(world.walk_routes) > 0
        road = np.concatenate([r.path.xy for r in world.vehicle_routes])
        for x, y, _, length, width, _, _ in world.occluders:  # no lane runs through a building
            inside = (np.abs(road[:, 0] - x) < length / 2) & (np.abs(road[:, 1] - y) < width / 2)
            assert not inside.any()
    with pytest.raises(ValueError, match="layout"):
        build_world("roundabout", np.random.default_rng(0))
